#!/bin/sh
# Rebuild llama-cpp-python (the llama.cpp localllm runs on) with a GPU backend, in one Python
# environment: the one localllm is installed in.
#
#   packaging/gpu/install.sh cuda|metal|rocm|vulkan|cpu|rpc [BACKEND ...] [--python PYTHON] [--print]
#
#   rpc              llama.cpp's RPC backend (ggml-rpc): --rpc HOST:PORT and localllm rpc-server;
#                    combinable with a GPU backend (install.sh cuda rpc)
#
#   --python PYTHON  the environment's interpreter (default: python3 on PATH; e.g. .venv/bin/python)
#   --print          print the command instead of running it
#
# The flags below mirror GPU_BUILDS in localllm/fit/hardware.py, whose note in `localllm hw` names
# the same command; tests/packaging/test_gpu_build.py fails if the two drift apart. The version is
# localllm's pin in pyproject.toml: localllm drives the low-level bindings, which change between
# releases. Needs a C/C++ compiler, CMake, and the backend's SDK (CUDA toolkit, ROCm, Vulkan SDK;
# Xcode command line tools for Metal). The build takes minutes.
set -eu

usage() {
    echo "usage: $0 cuda|metal|rocm|vulkan|cpu|rpc [BACKEND ...] [--python PYTHON] [--print]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
all=""
while [ $# -gt 0 ]; do
    case "$1" in
        cuda) flags="-DGGML_CUDA=on" ;;
        metal) flags="-DGGML_METAL=on" ;;
        rocm) flags="-DGGML_HIP=on" ;;
        vulkan) flags="-DGGML_VULKAN=on" ;;
        cpu) flags="-DGGML_NATIVE=on" ;;
        rpc) flags="-DGGML_RPC=on" ;;
        --*) break ;;
        *) usage ;;
    esac
    case " $all " in
        *" $flags "*) ;;
        *) all="${all:+$all }$flags" ;;
    esac
    shift
done
[ -n "$all" ] || usage
flags=$all

python=python3
print_only=no
while [ $# -gt 0 ]; do
    case "$1" in
        --python) [ $# -ge 2 ] || usage; python=$2; shift 2 ;;
        --print) print_only=yes; shift ;;
        *) usage ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^[[:space:]]*"llama-cpp-python==\([^"]*\)".*/\1/p' "$root/pyproject.toml")
[ -n "$version" ] || { echo "$0: no llama-cpp-python pin found in $root/pyproject.toml" >&2; exit 1; }

if [ "$print_only" = yes ]; then
    echo "CMAKE_ARGS=\"$flags\" $python -m pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python \"llama-cpp-python==$version\""
    exit 0
fi
CMAKE_ARGS="$flags" "$python" -m pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$version"
echo "done: check with $python -m localllm --version (its backends line) or localllm hw"
