"""How big a GGUF header's counts and lengths may be before they are damage rather than a model.

The bounds are llama.cpp's where ``gguf.cpp`` has them; past them :mod:`localllm.gguf.reader`
stops with a one-line error instead of allocating what a hostile file asks for.
"""

from __future__ import annotations

from . import validate

DEFAULT_ALIGNMENT = 32
MAX_KEPT_ARRAY = 256  # arrays with more elements are skipped and recorded as ArrayInfo

MAX_COUNT = 1_000_000  # n_kv, n_tensors
MAX_STRING = 1 << 30  # llama.cpp's GGUF_MAX_STRING_LENGTH
MAX_ARRAY = 1 << 30  # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = validate.MAX_NESTING  # arrays of arrays of ...: deeper is damage (and recursion)
PLAUSIBLE_STRING = 64 << 20  # longer and past the end of the file: damaged rather than truncated
