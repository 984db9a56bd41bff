#!/usr/bin/env bash
# Build llama.cpp's own llama-bench, llama-batched-bench, llama-server and llama-perplexity from the vendored llama.cpp in the
# llama-cpp-python sdist of the version installed here, so both sides of a comparison run the same
# llama.cpp. Output: .bench/bin/. Takes ~5 minutes on 2 cores; later runs reuse it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=$root/.bench
tools=${TOOLS:-"llama-bench llama-batched-bench llama-server llama-perplexity"}
missing=0
for t in $tools; do [ -x "$out/bin/$t" ] || missing=1; done
if [ $missing = 0 ]; then exit 0; fi
ver=$("$py" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$out/src"
if [ ! -d "$out/src/llama_cpp_python-$ver" ]; then
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$out/src"
  tar xzf "$out/src/llama_cpp_python-$ver.tar.gz" -C "$out/src"
fi
src=$out/src/llama_cpp_python-$ver/vendor/llama.cpp
examples=OFF  # llama-embedding is one of llama.cpp's examples (bench_docs.py --llama-embedding)
case " $tools " in *" llama-embedding "*) examples=ON ;; esac
cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=$examples -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >"$out/cmake.log"
# shellcheck disable=SC2086 # the tool names are words
cmake --build "$out/build" -j"${JOBS:-$(nproc)}" --target $tools >"$out/build.log"
mkdir -p "$out/bin"
for t in $tools; do cp "$out/build/bin/$t" "$out/bin/"; done
echo "built $out/bin/llama-bench (llama.cpp from llama-cpp-python $ver)"
