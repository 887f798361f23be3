"""Independent float64 numpy reference of Hugging Face transformers' Qwen2ForCausalLM, Qwen3ForCausalLM (dense)
and LlamaForCausalLM forward passes.

The three differ only in small ways, each switched on here by config.json as in transformers:
  qwen2  q/k/v biases always
  qwen3  attention_bias (q/k/v and o_proj, default false); head_dim from the config; q_norm / k_norm: RMSNorm over
         each head of q and k after the projection, before RoPE
  llama  attention_bias (q/k/v *and* o_proj), mlp_bias; head_dim optional; rope_scaling "linear" or "llama3"

Used only to produce golden fixtures for the TypeScript engine (see tools/make_goldens.py), so it favours
being obviously right over being fast. Weights are kept in float32 (bf16/f16 widen to it exactly) and widened
to float64 at the point of use; every piece of arithmetic happens in float64.

    model = load_model("/path/to/hf-model-dir")
    logits = forward(model, [151644, 872, 198])   # float64 [n, vocab]
    logits, hidden = forward(model, ids, return_layers=True)   # hidden[l]: [n, hidden] after layer l
"""
import json
import os

import numpy as np


# ---------------------------------------------------------------- safetensors

def read_safetensors(path):
    """Returns {name: float32 array}. Format: u64 LE header length, JSON header, then the raw data section."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    # memmap so a multi-GB checkpoint is not read into memory twice.
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]  # relative to the start of the data section
        buf = raw[data_start + begin : data_start + end]
        dtype, shape = info["dtype"], info["shape"]
        if dtype == "BF16":
            # bf16 is the top half of an f32: shifting the bits up widens it exactly.
            arr = (buf.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            arr = buf.view("<f2").astype(np.float32)
        elif dtype == "F32":
            arr = np.array(buf.view("<f4"), dtype=np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        tensors[name] = arr.reshape(shape)
    return tensors


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    # Refuse configs whose forward differs from the plain one implemented here, rather than be silently wrong.
    assert config.get("hidden_act", "silu") == "silu", config.get("hidden_act")
    assert config.get("model_type", "qwen2") in ("qwen2", "qwen3", "llama"), config.get("model_type")
    assert not config.get("use_sliding_window"), "sliding-window attention is not implemented"
    scaling = config.get("rope_scaling") or {}
    assert scaling.get("rope_type", scaling.get("type", "default")) in ("default", "linear", "llama3"), scaling
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        tensors = read_safetensors(single)
    else:
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(model_dir, shard)))
    # A bare decoder's checkpoint (Qwen3-Embedding) names its tensors without "model.".
    if "model.embed_tokens.weight" not in tensors and "embed_tokens.weight" in tensors:
        tensors = {(k if k == "lm_head.weight" else "model." + k): v for k, v in tensors.items()}
    return {"config": config, "tensors": tensors}


# ---------------------------------------------------------------- building blocks

def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_inv_freq(config, head_dim):
    """The head_dim/2 rotation frequencies, rescaled per config["rope_scaling"] (transformers' modeling_rope_utils)."""
    inv_freq = 1.0 / config.get("rope_theta", 10000.0) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv_freq
        # Short wavelengths (< old_context / high) keep their frequency, long ones (> old_context / low) are slowed
        # down by `factor`, and the ones between are interpolated linearly in old_context / wavelen.
        smooth = (old_context / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        return np.where(wavelen < old_context / high, inv_freq,
                        np.where(wavelen > old_context / low, inv_freq / factor, blended))
    return inv_freq


def rope_cos_sin(positions, inv_freq):
    """cos/sin [n, head_dim]: each frequency appears twice (once per half), the rotate_half layout."""
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """x [heads, n, head_dim]; pairs dimension j with j + head_dim/2 (NEOX style, not interleaved)."""
    return x * cos + rotate_half(x) * sin


def attention_probs(q, k):
    """Softmax of q.k/sqrt(d), causally masked; q, k [h, n, d] for positions 0..n-1 -> [h, n, n]."""
    n = q.shape[1]
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    future = np.triu(np.ones((n, n), dtype=bool), k=1)  # key position > query position
    scores = np.where(future[None], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


class Weights:
    """Widens stored float32 tensors to float64 on access."""

    def __init__(self, model):
        self.t = model["tensors"]

    def __call__(self, name):
        return self.t[name].astype(np.float64)

    def optional(self, name):
        """A bias that the config says may be absent: 0 when it is."""
        return self.t[name].astype(np.float64) if name in self.t else 0.0


def dims(config):
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return heads, kv_heads, head_dim


def attention_layer(w, p, x, cos, sin, config):
    """One self-attention block on normalised input x [n, hidden] at positions 0..n-1.

    Returns (output [n, hidden], attention probabilities [heads, n, n]).
    """
    heads, kv_heads, head_dim = dims(config)
    n = x.shape[0]
    family = config.get("model_type", "qwen2")
    has_bias = family == "qwen2" or config.get("attention_bias", False)

    def proj(name, count):  # nn.Linear: y = x W^T + b; output features are laid out head after head.
        y = x @ w(p + name + "_proj.weight").T
        if has_bias:
            y = y + w(p + name + "_proj.bias")
        return y.reshape(n, count, head_dim).transpose(1, 0, 2)

    q, k, v = proj("q", heads), proj("k", kv_heads), proj("v", kv_heads)
    if family == "qwen3":
        eps = config["rms_norm_eps"]
        q, k = rms_norm(q, w(p + "q_norm.weight"), eps), rms_norm(k, w(p + "k_norm.weight"), eps)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # GQA: HF's repeat_kv repeats each kv head for heads/kv_heads consecutive query heads, i.e. h -> h // group.
    group = heads // kv_heads
    k_rep, v_rep = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    probs = attention_probs(q, k_rep)
    out = (probs @ v_rep).transpose(1, 0, 2).reshape(n, heads * head_dim)
    o_bias = w(p + "o_proj.bias") if family != "qwen2" and config.get("attention_bias", False) else 0.0
    return out @ w(p + "o_proj.weight").T + o_bias, probs


def mlp(w, p, x, config):
    """SwiGLU; Llama's mlp_bias puts biases on all three projections."""
    bias = (lambda name: w(p + name + ".bias")) if config.get("mlp_bias", False) else (lambda name: 0.0)
    gate = x @ w(p + "gate_proj.weight").T + bias("gate_proj")
    up = x @ w(p + "up_proj.weight").T + bias("up_proj")
    return (silu(gate) * up) @ w(p + "down_proj.weight").T + bias("down_proj")


def lm_head(model, h):
    """Logits [n, vocab]. Tied models reuse embed_tokens; done in vocab chunks so a 1 GB f64 copy never exists."""
    name = "model.embed_tokens.weight" if model["config"].get("tie_word_embeddings") else "lm_head.weight"
    table = model["tensors"][name]
    chunk = 16384
    return np.concatenate(
        [h @ table[i : i + chunk].astype(np.float64).T for i in range(0, table.shape[0], chunk)], axis=1
    )


# ---------------------------------------------------------------- full forward

def forward(model, token_ids, return_layers=False):
    """Logits [n, vocab] (float64) for a prompt at positions 0..n-1, all positions in one pass.

    With return_layers, also the residual stream [n, hidden] after each layer.
    """
    h, layers = final_hidden(model, token_ids)
    logits = lm_head(model, h)
    return (logits, layers) if return_layers else logits


def final_hidden(model, token_ids):
    """The final-norm hidden states [n, hidden] (what the head reads; embeddings pool them), and the
    residual stream after each layer."""
    config, w = model["config"], Weights(model)
    eps = config["rms_norm_eps"]
    _, _, head_dim = dims(config)
    ids = np.asarray(token_ids, dtype=np.int64)
    h = model["tensors"]["model.embed_tokens.weight"][ids].astype(np.float64)
    cos, sin = rope_cos_sin(np.arange(len(ids)), rope_inv_freq(config, head_dim))
    layers = []
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w(p + "input_layernorm.weight"), eps)
        attn, _ = attention_layer(w, p + "self_attn.", x, cos, sin, config)
        h = h + attn
        x = rms_norm(h, w(p + "post_attention_layernorm.weight"), eps)
        h = h + mlp(w, p + "mlp.", x, config)
        layers.append(h)
    return rms_norm(h, w("model.norm.weight"), eps), layers
