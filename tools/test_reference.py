"""Self-checks for tools/reference_qwen2.py. Run by hand: python3 tools/test_reference.py"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_qwen2 as ref

CONFIG = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=50, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False)


def random_model(config, seed=0):
    rng = np.random.default_rng(seed)
    H, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = H // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (H, H), p + "self_attn.q_proj.bias": (H,),
                       p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.k_proj.bias": (kv,),
                       p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.v_proj.bias": (kv,),
                       p + "self_attn.o_proj.weight": (H, H), p + "mlp.gate_proj.weight": (I, H),
                       p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
    # Scale 0.5 (not the usual ~0.02) so attention is far from uniform and mistakes show up.
    tensors = {n: (rng.standard_normal(s) * 0.5 + (1.0 if n.endswith("norm.weight") else 0.0)).astype(np.float32)
               for n, s in shapes.items()}
    return {"config": config, "tensors": tensors}


def forward_incremental(model, token_ids):
    """A second implementation: one token at a time with an explicit KV cache and per-head loops."""
    c, t = model["config"], model["tensors"]
    w = lambda name: t[name].astype(np.float64)
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    d = c["hidden_size"] // heads
    eps = c["rms_norm_eps"]
    norm = lambda x, g: g * x / np.sqrt(np.dot(x, x) / len(x) + eps)
    half = d // 2
    freqs = c["rope_theta"] ** (-2.0 * np.arange(half) / d)

    def rope(x, pos):  # rotates the pair (x[j], x[j + half]) by angle pos * freqs[j]
        a, b = x[:half], x[half:]
        cs, sn = np.cos(pos * freqs), np.sin(pos * freqs)
        return np.concatenate([a * cs - b * sn, b * cs + a * sn])

    cache = [([], []) for _ in range(c["num_hidden_layers"])]  # per layer: lists of [kv_heads, d] per position
    out = []
    for pos, tok in enumerate(token_ids):
        h = w("model.embed_tokens.weight")[tok]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = norm(h, w(p + "input_layernorm.weight"))
            proj = lambda n: w(p + f"self_attn.{n}_proj.weight") @ x + w(p + f"self_attn.{n}_proj.bias")
            q, k, v = proj("q").reshape(heads, d), proj("k").reshape(kv_heads, d), proj("v").reshape(kv_heads, d)
            cache[i][0].append(np.stack([rope(k[j], pos) for j in range(kv_heads)]))
            cache[i][1].append(v)
            attn = []
            for hd in range(heads):
                g = hd * kv_heads // heads
                qh = rope(q[hd], pos)
                s = np.array([qh @ kc[g] for kc in cache[i][0]]) / np.sqrt(d)
                e = np.exp(s - s.max())
                attn.append(sum(pj * vc[g] for pj, vc in zip(e / e.sum(), cache[i][1])))
            h = h + w(p + "self_attn.o_proj.weight") @ np.concatenate(attn)
            x = norm(h, w(p + "post_attention_layernorm.weight"))
            gate, up = w(p + "mlp.gate_proj.weight") @ x, w(p + "mlp.up_proj.weight") @ x
            h = h + w(p + "mlp.down_proj.weight") @ (gate / (1 + np.exp(-gate)) * up)
        out.append(w("lm_head.weight") @ norm(h, w("model.norm.weight")))
    return np.array(out)


def test_matches_incremental():
    model = random_model(CONFIG)
    ids = [3, 17, 0, 49, 8, 8, 25, 11, 42, 1]
    full, inc = ref.forward(model, ids), forward_incremental(model, ids)
    assert full.shape == (len(ids), CONFIG["vocab_size"])
    err = np.abs(full - inc).max()
    assert err < 1e-10, err
    # Prefixes must agree too (causality): logits at position i only depend on tokens 0..i.
    assert np.abs(ref.forward(model, ids[:4]) - full[:4]).max() < 1e-10


def test_softmax_rows():
    model = random_model(CONFIG)
    w, c = ref.Weights(model), CONFIG
    n = 7
    x = ref.rms_norm(w("model.embed_tokens.weight")[:n], w("model.layers.0.input_layernorm.weight"), 1e-6)
    cos, sin = ref.rope_cos_sin(np.arange(n), ref.rope_inv_freq(c, 8))
    _, probs = ref.attention_layer(w, "model.layers.0.self_attn.", x, cos, sin, c)
    assert probs.shape == (4, n, n)
    assert np.abs(probs.sum(axis=-1) - 1).max() < 1e-12
    assert np.all(probs[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0)  # nothing from the future


def test_zeroed_layers():
    config = dict(CONFIG, tie_word_embeddings=True)
    model = random_model(config)
    t = model["tensors"]
    del t["lm_head.weight"]  # tied: logits come from embed_tokens
    for name in t:
        if name.startswith("model.layers."):
            t[name] = np.ones_like(t[name]) if name.endswith("norm.weight") else np.zeros_like(t[name])
    t["model.norm.weight"] = np.ones_like(t["model.norm.weight"])
    ids = [5, 9, 5, 40]
    E = t["model.embed_tokens.weight"].astype(np.float64)
    # Zero weights: attention outputs 0 (v = 0), the MLP outputs 0, so h stays the embedding.
    x = E[ids]
    expected = (x / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + 1e-6)) @ E.T
    assert np.abs(ref.forward(model, ids) - expected).max() < 1e-12


def test_llama3_inv_freq():
    """rope_inv_freq's llama3 branch against a scalar, one-frequency-at-a-time reading of Meta's apply_scaling."""
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
    config = dict(rope_theta=500000.0, rope_scaling=scaling)
    for head_dim in (64, 128):
        got = ref.rope_inv_freq(config, head_dim)
        base = ref.rope_inv_freq(dict(rope_theta=500000.0), head_dim)
        for j, f in enumerate(base):
            wavelen = 2 * math.pi / f
            if wavelen < 8192 / 4.0:
                want = f
            elif wavelen > 8192 / 1.0:
                want = f / 8.0
            else:
                smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
                want = (1 - smooth) * f / 8.0 + smooth * f
            assert abs(got[j] - want) <= 1e-15 * abs(want), (head_dim, j, got[j], want)
        # Llama 3.1 8B (head_dim 128): the three regimes all occur.
        kept, slowed = (got == base).sum(), np.isclose(got, base / 8.0, rtol=1e-15).sum()
        assert kept > 0 and slowed > 0 and kept + slowed < len(base), (kept, slowed)
    linear = ref.rope_inv_freq(dict(rope_theta=10000.0, rope_scaling=dict(type="linear", factor=4.0)), 16)
    assert np.allclose(linear * 4.0, ref.rope_inv_freq(dict(rope_theta=10000.0), 16), rtol=1e-15)


def test_qk_norm_and_o_bias():
    """Qwen3: a q_norm/k_norm weight of zeros makes every score 0 (uniform attention); o_proj.bias adds once."""
    config = dict(CONFIG, model_type="qwen3", head_dim=8, attention_bias=True)
    model = random_model(CONFIG)
    t = model["tensors"]
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        t[p + "q_norm.weight"] = np.zeros(8, dtype=np.float32)
        t[p + "k_norm.weight"] = np.ones(8, dtype=np.float32)
        t[p + "o_proj.bias"] = np.full(CONFIG["hidden_size"], 0.25, dtype=np.float32)
    model["config"] = config
    w = ref.Weights(model)
    n = 5
    x = ref.rms_norm(w("model.embed_tokens.weight")[:n], w("model.layers.0.input_layernorm.weight"), 1e-6)
    cos, sin = ref.rope_cos_sin(np.arange(n), ref.rope_inv_freq(config, 8))
    out, probs = ref.attention_layer(w, "model.layers.0.self_attn.", x, cos, sin, config)
    causal = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    assert np.abs(probs - causal[None]).max() < 1e-12
    # o_proj.bias is added: zeroing o_proj.weight leaves exactly the bias.
    t["model.layers.0.self_attn.o_proj.weight"] = np.zeros_like(t["model.layers.0.self_attn.o_proj.weight"])
    out, _ = ref.attention_layer(ref.Weights(model), "model.layers.0.self_attn.", x, cos, sin, config)
    assert np.all(out == 0.25)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print("ok", name)
