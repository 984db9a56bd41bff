#!/usr/bin/env bash
# Build a self-contained localllm that needs no Python, compiler or virtualenv on the target
# machine (issue 15): Python, llama.cpp's shared libraries, every dependency and models.toml.
#
#   packaging/standalone/build.sh [OUTPUT_DIR]
#
# Results (OUTPUT_DIR defaults to $LOCALLLM_STANDALONE_DIR, else dist/standalone in the repo):
#   OUTPUT_DIR/localllm/localllm     one-folder build (ship the whole localllm/ folder)
#   OUTPUT_DIR/localllm-onefile      one-file build
#
# PYTHON picks the environment to build from (default: the repo's .venv); it must already have
# localllm's dependencies, llama-cpp-python included, built the way the bundle should run (CPU,
# CUDA, ...). PyInstaller is installed into that environment if it is missing. Linux only: the
# bundle runs on machines with the build machine's glibc or newer.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
out="${1:-${LOCALLLM_STANDALONE_DIR:-$repo/dist/standalone}}"
if [ ! -x "$python" ]; then
    echo "build.sh: no Python at $python; set PYTHON to the python of an environment with localllm installed" >&2
    exit 1
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$out/.work"  # PyInstaller's build files: beside the result, never in the source tree

if ! "$python" -c "import PyInstaller" 2>/dev/null; then
    echo "installing PyInstaller into $("$python" -c 'import sys; print(sys.prefix)')" >&2
    "$python" -m pip install --quiet "pyinstaller>=6.10"
fi

rm -rf "$out/localllm" "$out/localllm-onefile"
(cd "$repo" && "$python" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$out" --workpath "$work" "$here/localllm.spec")
rm -rf "$work"

echo "one folder: $out/localllm/localllm ($(du -sh "$out/localllm" | cut -f1) in all)"
echo "one file:   $out/localllm-onefile ($(du -sh "$out/localllm-onefile" | cut -f1))"
