#!/usr/bin/env python3
"""A random LoRA adapter for a GGUF model, in llama.cpp's adapter format.

For every block's attention (q, k, v, output) and feed-forward (gate, up, down) projection
it writes `NAME.lora_a` (GGUF shape [inputs, rank]) and `NAME.lora_b` ([rank, outputs]),
F32, with `general.type = adapter`, `adapter.type = lora` and `adapter.lora.alpha`. The
entries are Gaussian, sized so that the adapter's term is about STRENGTH times the RMS of its
input (at scale 1): enough to move a model's logits visibly.

usage: random_lora.py MODEL.gguf OUT.gguf [--rank 8] [--alpha 16] [--strength 0.05] [--seed 0]
       [--arch ARCH] (writes ARCH as the adapter's architecture instead of the model's)
"""
import argparse

import numpy as np
import gguf

PROJECTIONS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--strength", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.model)
    arch = args.arch or bytes(reader.fields["general.architecture"].parts[-1]).decode()
    rng = np.random.default_rng(args.seed)
    writer = gguf.GGUFWriter(args.out, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", args.alpha)
    # (x·A)·B·alpha/rank has RMS ≈ strength·RMS(x) with these deviations
    factor = args.rank / args.alpha if args.alpha else 1.0
    for tensor in reader.tensors:
        stem = tensor.name.removesuffix(".weight")
        if not tensor.name.startswith("blk.") or stem.split(".")[-1] not in PROJECTIONS:
            continue
        inputs, outputs = int(tensor.shape[0]), int(tensor.shape[1])
        a = (rng.standard_normal((args.rank, inputs)) / np.sqrt(inputs)).astype(np.float32)
        b = (rng.standard_normal((outputs, args.rank)) * (args.strength * factor / np.sqrt(args.rank))).astype(np.float32)
        writer.add_tensor(stem + ".weight.lora_a", a)
        writer.add_tensor(stem + ".weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
