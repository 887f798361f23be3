"""Writes test/fixtures/rope-scaling.json: RoPE frequencies, attention factors and cos/sin rows for
rope_scaling "yarn" and "dynamic", computed in float64 numpy from the formulas of transformers'
modeling_rope_utils (_compute_yarn_parameters, _compute_dynamic_ntk_parameters), written out here
independently of the TypeScript. The tests compare src/tensor/ops.ts against it; they never run Python.

usage: python3 tools/rope_scaling_reference.py [OUT_JSON]
"""
import json
import math
import os
import sys

import numpy as np


def default_inv_freq(base, dim):
    return 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def yarn(head_dim, theta, max_pos, rs):
    factor = rs["factor"]
    original = rs.get("original_max_position_embeddings") or max_pos

    def get_mscale(scale, mscale=1.0):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        if rs.get("mscale") and rs.get("mscale_all_dim"):
            attention_factor = get_mscale(factor, rs["mscale"]) / get_mscale(factor, rs["mscale_all_dim"])
        else:
            attention_factor = get_mscale(factor)
    beta_fast = rs.get("beta_fast") or 32
    beta_slow = rs.get("beta_slow") or 1
    truncate = rs.get("truncate", True)

    def correction_dim(rotations):
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolation = default_inv_freq(theta, head_dim)
    interpolation = extrapolation / factor
    keep = 1 - ramp
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    return inv_freq, attention_factor


def dynamic(head_dim, theta, max_pos, rs, seq_len):
    factor = rs["factor"]
    original = rs.get("original_max_position_embeddings") or max_pos
    seq_len = max(seq_len, original)
    base = theta * ((factor * seq_len / original) - (factor - 1)) ** (head_dim / (head_dim - 2))
    return default_inv_freq(base, head_dim)


CASES = [
    # Qwen2.5 / Qwen3 as documented for 128k: factor 4 over 32,768.
    {"name": "qwen2.5-yarn-4", "head_dim": 64, "theta": 1e6, "max_pos": 32768,
     "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}},
    {"name": "qwen3-yarn-4", "head_dim": 128, "theta": 1e6, "max_pos": 40960,
     "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}},
    # No original length (falls back to max_position_embeddings), untruncated ramp, mscale pair.
    {"name": "yarn-mscale-untruncated", "head_dim": 64, "theta": 10000.0, "max_pos": 4096,
     "rope_scaling": {"type": "yarn", "factor": 8.0, "beta_fast": 16, "beta_slow": 2, "mscale": 0.707,
                      "mscale_all_dim": 1.0, "truncate": False}},
    {"name": "yarn-attention-factor", "head_dim": 16, "theta": 1e6, "max_pos": 64,
     "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32,
                      "attention_factor": 0.9}},
    {"name": "dynamic-2", "head_dim": 64, "theta": 1e6, "max_pos": 32768,
     "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
    {"name": "dynamic-small", "head_dim": 16, "theta": 10000.0, "max_pos": 64,
     "rope_scaling": {"type": "dynamic", "factor": 4.0}},
]

POSITIONS = [0, 1, 17, 1000, 40000, 131071]


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "rope-scaling.json")
    cases = []
    for c in CASES:
        hd, theta, max_pos, rs = c["head_dim"], c["theta"], c["max_pos"], c["rope_scaling"]
        rtype = rs.get("rope_type", rs.get("type"))
        entry = dict(c)
        positions = [p for p in POSITIONS if p < max(max_pos * 4, 256)]
        rows = []
        if rtype == "yarn":
            inv_freq, af = yarn(hd, theta, max_pos, rs)
            entry["inv_freq"] = inv_freq.tolist()
            entry["attention_factor"] = af
            for p in positions:
                angle = p * inv_freq
                rows.append({"pos": p, "cos": (np.cos(angle) * af).tolist(), "sin": (np.sin(angle) * af).tolist()})
        else:
            original = rs.get("original_max_position_embeddings") or max_pos
            entry["inv_freq_by_seq_len"] = [
                {"seq_len": n, "inv_freq": dynamic(hd, theta, max_pos, rs, n).tolist()}
                for n in [1, original, original + 1, 3 * original]
            ]
            entry["attention_factor"] = 1.0
            # Token-by-token decoding in transformers: position p is rotated with the frequencies of p+1 tokens.
            for p in positions:
                angle = p * dynamic(hd, theta, max_pos, rs, p + 1)
                rows.append({"pos": p, "cos": np.cos(angle).tolist(), "sin": np.sin(angle).tolist()})
        entry["rows"] = rows
        cases.append(entry)
    with open(out_path, "w") as f:
        json.dump({"generator": "tools/rope_scaling_reference.py", "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
