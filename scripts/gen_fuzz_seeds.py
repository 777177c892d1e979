#!/usr/bin/env python3
"""Seed files for the GGUF fuzz target (Tests/FuzzCorpus/gguf): small but complete models, so
libFuzzer starts from inputs that reach the hyper-parameter checks, both tokenizer loaders and
the chat template, not only the header parser.

  llama-bpe.gguf   llama, F32 and Q8_0 tensors, a byte-level BPE (gpt2) vocabulary with merges,
                   a chat template
  gemma3-spm.gguf  gemma3, a SentencePiece (llama) vocabulary with scores and token types,
                   sliding-window keys
  metadata.gguf    no tensors; one key of every GGUF value type, arrays included

usage: gen_fuzz_seeds.py [OUT_DIR]   (default Tests/FuzzCorpus/gguf)
"""
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import quantize

EMBD, HEADS, KV_HEADS, FF, LAYERS = 32, 4, 2, 64, 1
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tensors(w, arch, vocab, rng, quantized):
    def add(name, *shape, q=False):
        data = (rng.standard_normal(shape[::-1]) * 0.1).astype(np.float32)
        if q and quantized:
            w.add_tensor(name, quantize(data, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)
    head = EMBD // HEADS
    add("token_embd.weight", EMBD, vocab, q=True)
    add("output_norm.weight", EMBD)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", EMBD)
        add(f"blk.{i}.attn_q.weight", EMBD, EMBD, q=True)
        add(f"blk.{i}.attn_k.weight", EMBD, KV_HEADS * head, q=True)
        add(f"blk.{i}.attn_v.weight", EMBD, KV_HEADS * head, q=True)
        add(f"blk.{i}.attn_output.weight", EMBD, EMBD, q=True)
        add(f"blk.{i}.ffn_norm.weight", EMBD)
        add(f"blk.{i}.ffn_gate.weight", EMBD, FF, q=True)
        add(f"blk.{i}.ffn_up.weight", EMBD, FF, q=True)
        add(f"blk.{i}.ffn_down.weight", FF, EMBD, q=True)
        if arch == "gemma3":
            add(f"blk.{i}.attn_q_norm.weight", head)
            add(f"blk.{i}.attn_k_norm.weight", head)
            add(f"blk.{i}.post_attention_norm.weight", EMBD)
            add(f"blk.{i}.post_ffw_norm.weight", EMBD)


def hyper(w, arch):
    w.add_context_length(256)
    w.add_embedding_length(EMBD)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        w.add_key_length(EMBD // HEADS)
        w.add_value_length(EMBD // HEADS)
        w.add_sliding_window(16)


def llama_bpe(out, rng):
    w = gguf.GGUFWriter(out / "llama-bpe.gguf", "llama")
    hyper(w, "llama")
    w.add_rope_dimension_count(EMBD // HEADS)
    byte_tokens = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ", "!", "."]
    merged = ["Ġt", "he", "Ġthe", "in", "er"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = byte_tokens + merged + specials
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 3) + [3] * 3)
    w.add_token_merges(["Ġ t", "h e", "Ġt he", "i n", "e r"])
    w.add_bos_token_id(len(tokens) - 3)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template(TEMPLATE)
    tensors(w, "llama", len(tokens), rng, quantized=True)
    finish(w)


def gemma3_spm(out, rng):
    w = gguf.GGUFWriter(out / "gemma3-spm.gguf", "gemma3")
    hyper(w, "gemma3")
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"] \
        + [f"<0x{b:02X}>" for b in range(16)] + ["▁", "▁the", "▁a", "t", "h", "e", "a", "▁hello", "lo", "l", "o"]
    types = [3, 3, 3, 2, 3, 3] + [6] * 16 + [1] * 11
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * 22 + [-float(i) for i in range(11)])
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    tensors(w, "gemma3", len(pieces), rng, quantized=False)
    finish(w)


def metadata(out):
    w = gguf.GGUFWriter(out / "metadata.gguf", "llama")
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 700)
    w.add_int16("t.i16", -700)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float32("t.f32", 0.5)
    w.add_float64("t.f64", 0.25)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo")
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.strings", ["a", "bc", ""])
    w.add_array("t.floats", [0.5, -1.0])
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "Tests/FuzzCorpus/gguf")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    llama_bpe(out, rng)
    gemma3_spm(out, rng)
    metadata(out)


if __name__ == "__main__":
    main()
