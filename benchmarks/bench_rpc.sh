#!/usr/bin/env bash
# The llama.cpp RPC path end to end: build llama-cpp-python with GGML_RPC (the vendored llama.cpp of
# the version installed here, as packaging/gpu/install.sh rpc does) into a venv of its own, then run
# benchmarks/bench_rpc.py with it: two `localllm rpc-server` workers on 127.0.0.1, a model split
# across them, compared with a local run.
#
#   benchmarks/bench_rpc.sh [bench_rpc.py options]
#
# Output: .bench/rpc/ (sdist, CMake build tree, wheel, venv). The build takes ~10 minutes on 2 cores
# (JOBS=N to change its parallelism); later runs reuse it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=$root/.bench/rpc
ver=$("$py" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$out/src" "$out/wheel"
wheel=$(ls "$out"/wheel/llama_cpp_python-"$ver"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  if [ ! -d "$out/src/llama_cpp_python-$ver" ]; then
    "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$out/src"
    tar xzf "$out/src/llama_cpp_python-$ver.tar.gz" -C "$out/src"
  fi
  echo "building llama-cpp-python $ver with GGML_RPC (once, ~10 minutes on 2 cores)..." >&2
  # LLAVA_BUILD=OFF: localllm does not use the multimodal library; the build is shorter without it.
  CMAKE_ARGS="-DGGML_RPC=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} \
    "$py" -m pip wheel -q --no-deps -w "$out/wheel" --config-settings=build-dir="$out/build" \
    "$out/src/llama_cpp_python-$ver" >"$out/build.log" 2>&1
  wheel=$(ls "$out"/wheel/llama_cpp_python-"$ver"-*.whl | head -1)
fi
venv=$out/venv
if [ ! -x "$venv/bin/localllm" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "$wheel"
  "$venv/bin/pip" install -q -e "$root"
fi
"$venv/bin/python" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)" ||
  { echo "$venv: llama-cpp-python has no RPC backend" >&2; exit 1; }
exec "$venv/bin/python" "$root/benchmarks/bench_rpc.py" "$@"
