#!/usr/bin/env python3
"""The exact oracle for a GGUF: its weights dequantized by gguf-py (bit-identical to ggml's
dequantize_row_*), then a float64 forward pass of qwen2 / qwen3 / llama (llama's q/k rows in the
file's interleaved order, so RoPE pairs adjacent dims, as ggml's NORM RoPE does).

usage: python3 tools/gguf/oracle.py FILE.gguf TOKEN_IDS_COMMA_SEPARATED OUT.json
writes {"tokens": [...], "logits": [[...] per position]}
"""
import json, os, sys
import numpy as np

sys.path.insert(0, os.environ.get("GGUF_PY", "/work/llama/llama.cpp/gguf-py"))
import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def main():
    path, toks, out = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
    r = gguf.GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.")}
    arch = f["general.architecture"]
    g = lambda k, d=None: f.get(f"{arch}.{k}", d)
    W = {}
    for t in r.tensors:
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
        W[t.name] = a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a.reshape(-1)
    H, nh = g("embedding_length"), g("attention.head_count")
    nkv = g("attention.head_count_kv", nh)
    hd = g("attention.key_length", H // nh)
    eps, theta = g("attention.layer_norm_rms_epsilon"), g("rope.freq_base", 10000.0)
    L = g("block_count")
    freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    if "rope_freqs.weight" in W:
        freq = freq / W["rope_freqs.weight"]
    neox = arch != "llama"  # qwen2/qwen3: rotate-half pairs (j, j+hd/2); llama in GGUF: adjacent pairs
    def rope(x, pos):  # x [heads, hd]
        c, s = np.cos(pos * freq), np.sin(pos * freq)
        y = x.copy()
        if neox:
            a, b = x[:, : hd // 2], x[:, hd // 2 :]
            y[:, : hd // 2], y[:, hd // 2 :] = a * c - b * s, b * c + a * s
        else:
            a, b = x[:, 0::2], x[:, 1::2]
            y[:, 0::2], y[:, 1::2] = a * c - b * s, b * c + a * s
        return y
    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w
    lin = lambda x, n: x @ W[n + ".weight"].T + (W[n + ".bias"] if n + ".bias" in W else 0)
    out_w = W.get("output.weight", W["token_embd.weight"])
    K = [[] for _ in range(L)]
    V = [[] for _ in range(L)]
    logits = []
    for pos, tok in enumerate(toks):
        x = W["token_embd.weight"][tok].copy()
        for l in range(L):
            p = f"blk.{l}."
            h = rms(x, W[p + "attn_norm.weight"])
            q = lin(h, p + "attn_q").reshape(nh, hd)
            k = lin(h, p + "attn_k").reshape(nkv, hd)
            v = lin(h, p + "attn_v").reshape(nkv, hd)
            if p + "attn_q_norm.weight" in W:
                q, k = rms(q, W[p + "attn_q_norm.weight"]), rms(k, W[p + "attn_k_norm.weight"])
            q, k = rope(q, pos), rope(k, pos)
            K[l].append(k)
            V[l].append(v)
            Ks, Vs = np.stack(K[l]), np.stack(V[l])  # [t, nkv, hd]
            att = np.zeros((nh, hd))
            for hh in range(nh):
                kv = hh // (nh // nkv)
                sc = Ks[:, kv, :] @ q[hh] / np.sqrt(hd)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att[hh] = sc @ Vs[:, kv, :]
            x = x + lin(att.reshape(-1), p + "attn_output")
            h = rms(x, W[p + "ffn_norm.weight"])
            gate, up = lin(h, p + "ffn_gate"), lin(h, p + "ffn_up")
            x = x + lin(gate / (1 + np.exp(-gate)) * up, p + "ffn_down")
        logits.append((rms(x, W["output_norm.weight"]) @ out_w.T).tolist())
    json.dump({"file": os.path.basename(path), "tokens": toks, "logits": logits}, open(out, "w"))
    print(f"wrote {out}: {len(toks)} positions, max |logit| {np.abs(np.array(logits)).max():.3f}")


if __name__ == "__main__":
    main()
