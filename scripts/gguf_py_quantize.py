#!/usr/bin/env python3
"""Writes a copy of a float GGUF model whose weight matrices are quantized by the `gguf`
package's reference quantizer (`gguf.quants.quantize`).

For formats llama-quantize does not write for a dense model (MXFP4 is only chosen for MoE
experts), this gives a model file in that format that both llama.cpp and Swiftlet read.
Matrices whose rows are not whole blocks of TYPE, and the token embeddings, become Q8_0
(as llama-quantize does with rows that do not fit); 1-D tensors (norms, biases) stay as they are.

With a PATTERN (a regular expression), only the matrices whose names match it become TYPE and
the others Q8_0: e.g. a few ternary (TQ1_0, TQ2_0) layers in a model that ternary weights
everywhere would wreck.

Usage: python3 scripts/gguf_py_quantize.py IN.gguf OUT.gguf TYPE [PATTERN]    (TYPE: MXFP4, TQ1_0, TQ2_0, Q8_0, ...)
"""
from __future__ import annotations

import re
import sys

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize, dequantize


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    source, destination, type_name = sys.argv[1:4]
    pattern = re.compile(sys.argv[4]) if len(sys.argv) == 5 else None
    target = gguf.GGMLQuantizationType[type_name.upper()]
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(destination, arch=None)
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)

    for tensor in reader.tensors:
        data = np.asarray(tensor.data)
        if tensor.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = dequantize(data, tensor.tensor_type)
        rows = data.reshape(-1, int(tensor.shape[0])).astype(np.float32)
        if len(tensor.shape) < 2:
            writer.add_tensor(tensor.name, rows.reshape(-1))
            continue
        block = GGML_QUANT_SIZES[target][0]
        chosen = pattern.search(tensor.name) if pattern else tensor.name != "token_embd.weight"
        kind = target if rows.shape[1] % block == 0 and chosen else gguf.GGMLQuantizationType.Q8_0
        # a few rows at a time: the reference quantizers build arrays many times the input's size
        batch = max(1, (1 << 16) // rows.shape[1])
        quantized = np.concatenate([quantize(rows[i:i + batch], kind) for i in range(0, rows.shape[0], batch)])
        writer.add_tensor(tensor.name, quantized, raw_dtype=kind)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
