#!/usr/bin/env python3
"""Small synthetic GGUF models with an independent numpy forward pass.

For each architecture this writes `ARCH-TYPE.gguf` (random weights, realistic structure,
scaled-down shapes; F32 or a quantized type) and `ARCH-TYPE.json` holding the prompt tokens,
the reference logits at every position, and 32 greedy tokens. The Swift tests load the GGUF,
run their own forward pass and compare.

usage: synthetic_models.py OUT_DIR [ARCH ...]
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import quantize, dequantize

VOCAB = 96
PROMPT = [1, 17, 42, 5, 88, 23, 9, 61, 30, 2, 77, 14]
GREEDY_STEPS = 32


class Weights:
    """Collects tensors for the GGUF and keeps what the file really holds (after quantization)."""

    def __init__(self, rng, qtype):
        QUANTIZED.clear()  # ids of a previous model's arrays may be reused
        self.rng = rng
        self.qtype = qtype
        self.tensors = {}  # name -> (array as stored for numpy math, raw for writer, gguf type)

    def matrix(self, name, rows, cols, scale=None, quantized=True):
        w = self.rng.standard_normal((rows, cols)).astype(np.float32) * (scale or 1 / np.sqrt(cols))
        qtype = self.qtype if quantized else gguf.GGMLQuantizationType.F32
        if qtype == gguf.GGMLQuantizationType.F32:
            self.tensors[name] = (w, w, qtype)
            return w
        raw = quantize(w, qtype)
        w = dequantize(raw, qtype).reshape(rows, cols).astype(np.float32)
        self.tensors[name] = (w, raw, qtype)
        QUANTIZED.add(id(w))
        return w

    def vector(self, name, n, center=1.0, spread=0.1):
        v = (center + spread * self.rng.standard_normal(n)).astype(np.float32)
        self.tensors[name] = (v, v, gguf.GGMLQuantizationType.F32)
        return v

    def write(self, writer):
        for name, (_, raw, qtype) in self.tensors.items():
            if qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, np.ascontiguousarray(raw, dtype=np.float32))
            else:
                writer.add_tensor(name, raw, raw_dtype=qtype)


# Matrices stored in a quantized type; products with them see 8-bit activations.
QUANTIZED = set()


def quantize_activations(x):
    """8-bit activations as the engine (and llama.cpp) feed quantized weights: blocks of 32,
    scale max|x|/127 kept in half precision, round half to even."""
    xb = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(xb).max(axis=1)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    return (np.rint(xb * inv[:, None]) * d[:, None]).reshape(x.shape)


def lin(x, w):
    """x @ wᵀ for one token (1-D x) or a batch of rows. Summed in float64: a float32 BLAS
    sums in an order of its own CPU's kernel, and a last-bit difference can move the next
    layer's 8-bit activation across a rounding step (seen: OpenBLAS on an AVX2-only CPU
    moved the Mixtral Q8_0 logits by 0.03)."""
    if id(w) in QUANTIZED:
        x = quantize_activations(np.atleast_2d(x)).reshape(np.shape(x))
    return (np.asarray(x, dtype=np.float64) @ w.T.astype(np.float64)).astype(np.float32)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps).astype(np.float32) * w


def rope(x, pos, base, style):
    """x: (heads, head_dim) for one token. 'interleaved' pairs (2i, 2i+1), 'halves' pairs (i, i+d/2)."""
    d = x.shape[-1]
    half = d // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2 / d)
    ang = pos * inv
    c, s = np.cos(ang), np.sin(ang)
    out = x.astype(np.float64).copy()
    if style == "interleaved":
        a, b = out[:, 0::2].copy(), out[:, 1::2].copy()
        out[:, 0::2] = a * c - b * s
        out[:, 1::2] = a * s + b * c
    else:
        a, b = out[:, :half].copy(), out[:, half:].copy()
        out[:, :half] = a * c - b * s
        out[:, half:] = a * s + b * c
    return out.astype(np.float32)


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * x * (1 + 0.044715 * x * x)))


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def geglu_act(x):
    """llama.cpp's GELU in GeGLU: a table over half-precision inputs with half-precision
    results; 0 below -10, identity above 10."""
    h = x.astype(np.float16).astype(np.float32)
    g = gelu_tanh(h).astype(np.float16).astype(np.float32)
    return np.where(x <= -10, np.float32(0), np.where(x >= 10, x, g)).astype(np.float32)


def flash_attention_row(q, k, v, scale):
    """llama.cpp's CPU flash attention for one query row (its kernel for batches of fewer than
    64 tokens and for decoding): q rounded to half, online softmax over the positions in order,
    the output accumulated in half precision, divided by the running sum at the end."""
    f32, f16 = np.float32, np.float16
    q16 = q.astype(f16).astype(np.float64)
    acc = np.zeros(v.shape[1], dtype=f16)
    total, m = f32(0), f32(-np.inf)
    for p in range(len(k)):
        s = f32(f32(k[p].astype(np.float64) @ q16) * f32(scale))
        ms, w = f32(1), f32(1)
        if s > m:
            ms, m = f32(np.exp(f32(m - s))), s
            acc = (acc.astype(f32) * ms).astype(f16)
        else:
            w = f32(np.exp(f32(s - m)))
        acc = (acc.astype(np.float64) + v[p].astype(np.float64) * np.float64(w)).astype(f32).astype(f16)
        total = f32(total * ms + w)
    return acc.astype(f32) * (f32(1) / total)


class Transformer:
    """Decoder-only transformer covering llama, qwen2, gemma3 and llama-with-experts (Mixtral)."""

    def __init__(self, arch, qtype, seed):
        self.arch = arch
        rng = np.random.default_rng(seed)
        W = self.W = Weights(rng, qtype)
        self.d, self.layers, self.heads, self.kv_heads = 64, 2, 4, 2
        self.head_dim, self.ffn = 16, 96
        self.eps, self.base = 1e-5, 10000.0
        self.style = "interleaved"
        self.window, self.n_expert, self.n_used = None, 0, 0
        if arch == "qwen2":
            self.style, self.base = "halves", 1e6
        if arch == "gemma3":
            self.layers, self.head_dim, self.heads, self.kv_heads = 6, 32, 2, 1
            self.style, self.base, self.eps, self.window = "halves", 1e6, 1e-6, 4
        if arch == "mixtral":
            self.n_expert, self.n_used = 4, 2
        d, hd = self.d, self.head_dim
        self.embed = W.matrix("token_embd.weight", VOCAB, d, scale=1.0, quantized=True)
        self.blocks = []
        for i in range(self.layers):
            p = f"blk.{i}."
            b = {
                "attn_norm": W.vector(p + "attn_norm.weight", d),
                "q": W.matrix(p + "attn_q.weight", self.heads * hd, d),
                "k": W.matrix(p + "attn_k.weight", self.kv_heads * hd, d),
                "v": W.matrix(p + "attn_v.weight", self.kv_heads * hd, d),
                "o": W.matrix(p + "attn_output.weight", d, self.heads * hd),
                "ffn_norm": W.vector(p + "ffn_norm.weight", d),
            }
            if arch == "qwen2":
                for n, size in (("q", self.heads * hd), ("k", self.kv_heads * hd), ("v", self.kv_heads * hd)):
                    b[n + "_bias"] = W.vector(p + f"attn_{n}.bias", size, center=0.0, spread=0.5)
            if arch == "gemma3":
                b["q_norm"] = W.vector(p + "attn_q_norm.weight", hd)
                b["k_norm"] = W.vector(p + "attn_k_norm.weight", hd)
                b["post_attn_norm"] = W.vector(p + "post_attention_norm.weight", d)
                b["post_ffn_norm"] = W.vector(p + "post_ffw_norm.weight", d)
            if self.n_expert:
                b["router"] = W.matrix(p + "ffn_gate_inp.weight", self.n_expert, d, scale=1.0, quantized=False)
                experts = {n: np.stack([W.rng.standard_normal(s).astype(np.float32) / np.sqrt(s[1])
                                        for _ in range(self.n_expert)])
                           for n, s in (("gate", (self.ffn, d)), ("up", (self.ffn, d)), ("down", (d, self.ffn)))}
                for n, arr in experts.items():
                    name = p + f"ffn_{n}_exps.weight"
                    if W.qtype == gguf.GGMLQuantizationType.F32:
                        W.tensors[name] = (arr, arr, W.qtype)
                    else:
                        raw = quantize(arr, W.qtype)
                        arr = dequantize(raw, W.qtype).reshape(arr.shape).astype(np.float32)
                        W.tensors[name] = (arr, raw, W.qtype)
                        arr = [np.ascontiguousarray(e) for e in arr]
                        QUANTIZED.update(id(e) for e in arr)
                    b[n + "_exps"] = arr
            else:
                b["gate"] = W.matrix(p + "ffn_gate.weight", self.ffn, d)
                b["up"] = W.matrix(p + "ffn_up.weight", self.ffn, d)
                b["down"] = W.matrix(p + "ffn_down.weight", d, self.ffn)
            self.blocks.append(b)
        self.out_norm = W.vector("output_norm.weight", d)
        # gemma3 ties the head to the embeddings; the others get their own output matrix.
        self.head = self.embed if arch == "gemma3" else W.matrix("output.weight", VOCAB, d)

    def is_local(self, i):
        return self.arch == "gemma3" and (i + 1) % 6 != 0

    def layer_base(self, i):
        return 10000.0 if self.is_local(i) else self.base

    def forward(self, tokens):
        """Logits at every position for the whole sequence (causal attention, no cache)."""
        d, hd, H, KV = self.d, self.head_dim, self.heads, self.kv_heads
        x = self.embed[tokens].astype(np.float32)
        if self.arch == "gemma3":
            x = x * np.float32(np.sqrt(d))
        T = len(tokens)
        for i, b in enumerate(self.blocks):
            h = rms_norm(x, b["attn_norm"], self.eps)
            q, k, v = lin(h, b["q"]), lin(h, b["k"]), lin(h, b["v"])
            if "q_bias" in b:
                q, k, v = q + b["q_bias"], k + b["k_bias"], v + b["v_bias"]
            q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
            if "q_norm" in b:
                q, k = rms_norm(q, b["q_norm"], self.eps), rms_norm(k, b["k_norm"], self.eps)
            q = np.stack([rope(q[t], t, self.layer_base(i), self.style) for t in range(T)])
            k = np.stack([rope(k[t], t, self.layer_base(i), self.style) for t in range(T)])
            # The KV cache holds keys and values in half precision.
            k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
            # llama.cpp's gemma3 graph scales q after RoPE and leaves the scores unscaled.
            scale = np.float32(1 / np.sqrt(np.float32(hd)))
            if self.arch == "gemma3":
                q, scale = (q * scale).astype(np.float32), np.float32(1)
            att = np.zeros((T, H, hd), dtype=np.float32)
            for t in range(T):
                lo = max(0, t - self.window + 1) if self.is_local(i) else 0
                for hh in range(H):
                    g = hh // (H // KV)
                    att[t, hh] = flash_attention_row(q[t, hh], k[lo:t + 1, g], v[lo:t + 1, g], scale)
            a = lin(att.reshape(T, H * hd), b["o"])
            if self.arch == "gemma3":
                a = rms_norm(a, b["post_attn_norm"], self.eps)
            x = x + a
            h = rms_norm(x, b["ffn_norm"], self.eps)
            if self.n_expert:
                f = np.zeros_like(h)
                for t in range(T):
                    logits = lin(h[t], b["router"])
                    chosen = np.argsort(-logits, kind="stable")[:self.n_used]
                    weights = softmax(logits)[chosen]
                    weights = weights / weights.sum()
                    for e, wgt in zip(chosen, weights):
                        inner = silu(lin(h[t], b["gate_exps"][e])) * lin(h[t], b["up_exps"][e])
                        f[t] += wgt * lin(inner, b["down_exps"][e])
            else:
                act = geglu_act if self.arch == "gemma3" else silu
                f = lin(act(lin(h, b["gate"])) * lin(h, b["up"]), b["down"])
            if self.arch == "gemma3":
                f = rms_norm(f, b["post_ffn_norm"], self.eps)
            x = x + f
        return lin(rms_norm(x, self.out_norm, self.eps), self.head)

    def write(self, path):
        arch = "llama" if self.arch == "mixtral" else self.arch
        w = gguf.GGUFWriter(str(path), arch)
        w.add_context_length(256)
        w.add_embedding_length(self.d)
        w.add_block_count(self.layers)
        w.add_feed_forward_length(self.ffn)
        w.add_head_count(self.heads)
        w.add_head_count_kv(self.kv_heads)
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.head_dim)
        w.add_rope_freq_base(self.base)
        w.add_layer_norm_rms_eps(self.eps)
        w.add_vocab_size(VOCAB)
        if self.window:
            w.add_sliding_window(self.window)
        if self.n_expert:
            w.add_expert_count(self.n_expert)
            w.add_expert_used_count(self.n_used)
        add_toy_vocab(w)
        self.W.write(w)
        finish(w)


class Mamba:
    """Mamba-1 selective state-space model, as llama.cpp lays out its GGUF tensors."""

    def __init__(self, qtype, seed):
        rng = np.random.default_rng(seed)
        W = self.W = Weights(rng, qtype)
        self.d, self.layers, self.d_inner, self.d_state, self.d_conv, self.dt_rank = 64, 2, 128, 8, 4, 8
        self.eps = 1e-5
        d, di, ds, dc, dr = self.d, self.d_inner, self.d_state, self.d_conv, self.dt_rank
        self.embed = W.matrix("token_embd.weight", VOCAB, d, scale=1.0)
        self.blocks = []
        for i in range(self.layers):
            p = f"blk.{i}."
            b = {
                "norm": W.vector(p + "attn_norm.weight", d),
                "in": W.matrix(p + "ssm_in.weight", 2 * di, d),
                "conv": W.matrix(p + "ssm_conv1d.weight", di, dc, scale=0.5, quantized=False),
                "conv_b": W.vector(p + "ssm_conv1d.bias", di, center=0.0, spread=0.1),
                "x": W.matrix(p + "ssm_x.weight", dr + 2 * ds, di),
                "dt": W.matrix(p + "ssm_dt.weight", di, dr, quantized=False),
                "dt_b": W.vector(p + "ssm_dt.bias", di, center=-2.0, spread=0.5),
                # A is stored as -exp(A_log), as llama.cpp's converter writes it.
                "A": W.matrix(p + "ssm_a", di, ds, scale=1.0, quantized=False),
                "D": W.vector(p + "ssm_d", di, center=1.0, spread=0.1),
                "out": W.matrix(p + "ssm_out.weight", d, di),
            }
            a = -np.exp(rng.standard_normal((di, ds)).astype(np.float32) * 0.5)
            W.tensors[p + "ssm_a"] = (a, a, gguf.GGMLQuantizationType.F32)
            b["A"] = a
            self.blocks.append(b)
        self.out_norm = W.vector("output_norm.weight", d)
        self.head = W.matrix("output.weight", VOCAB, d)

    def forward(self, tokens):
        di, ds, dc, dr = self.d_inner, self.d_state, self.d_conv, self.dt_rank
        x = self.embed[tokens].astype(np.float32)
        T = len(tokens)
        for b in self.blocks:
            h = rms_norm(x, b["norm"], self.eps)
            xz = lin(h, b["in"])
            xs, z = xz[:, :di], xz[:, di:]
            padded = np.concatenate([np.zeros((dc - 1, di), np.float32), xs])
            conv = np.stack([(padded[t:t + dc].T * b["conv"]).sum(axis=1) for t in range(T)]) + b["conv_b"]
            u = silu(conv)
            proj = lin(u, b["x"])
            dt_in, B, C = proj[:, :dr], proj[:, dr:dr + ds], proj[:, dr + ds:]
            dt = np.log1p(np.exp(lin(dt_in, b["dt"]) + b["dt_b"]))  # softplus
            state = np.zeros((di, ds), np.float32)
            y = np.zeros((T, di), np.float32)
            for t in range(T):
                state = state * np.exp(dt[t][:, None] * b["A"]) + (dt[t] * u[t])[:, None] * B[t][None, :]
                y[t] = state @ C[t] + b["D"] * u[t]
            x = x + lin(y * silu(z), b["out"])
        return lin(rms_norm(x, self.out_norm, self.eps), self.head)

    def write(self, path):
        w = gguf.GGUFWriter(str(path), "mamba")
        w.add_context_length(256)
        w.add_embedding_length(self.d)
        w.add_block_count(self.layers)
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_ssm_conv_kernel(self.d_conv)
        w.add_ssm_inner_size(self.d_inner)
        w.add_ssm_state_size(self.d_state)
        w.add_ssm_time_step_rank(self.dt_rank)
        w.add_layer_norm_rms_eps(self.eps)
        w.add_vocab_size(VOCAB)
        add_toy_vocab(w)
        self.W.write(w)
        finish(w)


def add_toy_vocab(w):
    """A byte-level BPE vocabulary of printable characters, so the files load as full models."""
    # the last token is a merge of the first character with itself: a BPE vocabulary needs
    # merges (gguf-py drops an empty list, and loaders refuse a file without the key)
    tokens = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(33, 33 + VOCAB - 4)] + ["!!"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (VOCAB - 3))
    w.add_token_merges(["! !"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy(model, prompt, steps):
    tokens = list(prompt)
    out = []
    for _ in range(steps):
        nxt = int(np.argmax(model.forward(tokens)[-1]))
        out.append(nxt)
        tokens.append(nxt)
    return out


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    archs = sys.argv[2:] or ["llama", "qwen2", "gemma3", "mixtral", "mamba"]
    types = {"f32": gguf.GGMLQuantizationType.F32, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    for seed, arch in enumerate(archs):
        for tname, qtype in types.items():
            model = Mamba(qtype, seed) if arch == "mamba" else Transformer(arch, qtype, seed)
            stem = out / f"{arch}-{tname}"
            model.write(stem.with_suffix(".gguf"))
            logits = model.forward(PROMPT)
            ref = {"prompt": PROMPT, "logits": logits.astype(float).round(6).tolist(),
                   "greedy": greedy(model, PROMPT, GREEDY_STEPS)}
            stem.with_suffix(".json").write_text(json.dumps(ref))
            print(stem)


if __name__ == "__main__":
    main()
