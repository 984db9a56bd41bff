"""The GGUF format's tables: metadata value types and ggml tensor types (block size, bytes per
block, name). Pure data; :mod:`localllm.gguf.reader` parses with them, the estimator sizes with them.
"""

from __future__ import annotations

import struct

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)

VALUE_TYPE_NAMES = {
    T_UINT8: "uint8", T_INT8: "int8", T_UINT16: "uint16", T_INT16: "int16",
    T_UINT32: "uint32", T_INT32: "int32", T_FLOAT32: "float32", T_BOOL: "bool",
    T_STRING: "string", T_ARRAY: "array", T_UINT64: "uint64", T_INT64: "int64",
    T_FLOAT64: "float64",
}  # fmt: skip

# struct format character and size of the fixed-size value types.
SCALAR = {
    T_UINT8: ("B", 1), T_INT8: ("b", 1), T_UINT16: ("H", 2), T_INT16: ("h", 2),
    T_UINT32: ("I", 4), T_INT32: ("i", 4), T_FLOAT32: ("f", 4), T_BOOL: ("B", 1),
    T_UINT64: ("Q", 8), T_INT64: ("q", 8), T_FLOAT64: ("d", 8),
}  # fmt: skip
SCALAR_STRUCT = {t: struct.Struct("<" + c) for t, (c, _) in SCALAR.items()}

# ggml tensor types: (block size in elements, bytes per block). Copied from gguf 0.19's
# gguf.constants.GGML_QUANT_SIZES (a test checks they stay equal), names from GGMLQuantizationType.
GGML_QUANT_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}  # fmt: skip

# Types that the llama.cpp bundled with llama-cpp-python 0.3.36 knows but gguf 0.19 does not
# (vendor/llama.cpp/ggml/include/ggml.h, ggml-common.h). Kept apart so the table above can be
# compared with gguf's.
_EXTRA_QUANT_SIZES: dict[int, tuple[int, int]] = {42: (64, 18)}  # Q2_0: fp16 scale + 64 x 2 bits
_EXTRA_TYPE_NAMES: dict[int, str] = {42: "Q2_0"}
QUANT_SIZES = {**GGML_QUANT_SIZES, **_EXTRA_QUANT_SIZES}
TYPE_NAMES = {**GGML_TYPE_NAMES, **_EXTRA_TYPE_NAMES}


def ggml_type_name(ggml_type: int) -> str:
    """``"Q4_K"`` for 12; ``"type 99"`` for an id this module does not know."""
    return TYPE_NAMES.get(ggml_type, f"type {ggml_type}")
