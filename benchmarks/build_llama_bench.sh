#!/usr/bin/env bash
# Build llama.cpp's own llama-bench, llama-batched-bench and llama-server from the vendored llama.cpp in the
# llama-cpp-python sdist of the version installed here, so both sides of a comparison run the same
# llama.cpp. Output: .bench/bin/. Takes ~5 minutes on 2 cores; later runs reuse it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=$root/.bench
if [ -x "$out/bin/llama-bench" ] && [ -x "$out/bin/llama-batched-bench" ] && [ -x "$out/bin/llama-server" ]; then exit 0; fi
ver=$("$py" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$out/src"
if [ ! -d "$out/src/llama_cpp_python-$ver" ]; then
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$out/src"
  tar xzf "$out/src/llama_cpp_python-$ver.tar.gz" -C "$out/src"
fi
src=$out/src/llama_cpp_python-$ver/vendor/llama.cpp
cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >"$out/cmake.log"
cmake --build "$out/build" -j"$(nproc)" --target llama-bench llama-batched-bench llama-server >"$out/build.log"
mkdir -p "$out/bin"
cp "$out/build/bin/llama-bench" "$out/build/bin/llama-batched-bench" "$out/build/bin/llama-server" "$out/bin/"
echo "built $out/bin/llama-bench (llama.cpp from llama-cpp-python $ver)"
