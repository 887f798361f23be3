"""Writes golden logits and per-layer hidden states for the TypeScript engine's tests from the float64 numpy
reference of HF Qwen2 / Qwen3 / Llama (tools/reference_qwen2.py).

usage: python3 tools/make_goldens.py MODEL_DIR OUT_JSON

MODEL_DIR is normally a synthetic model from `node dist/src/cli/make-model.js`, whose config.json records the
preset and seed under "qwen_ts_synthetic"; they are copied into the fixture so its provenance is clear.
The full logits (vocab 151936 per position) are too big to commit, so per position we keep 512 columns plus
the full-vocab argmax, max and logsumexp, which together catch both local and global errors; and the residual
stream after every layer at every position, so that a failing test names the first layer that differs.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_qwen2 import forward, load_model

N_COLUMNS = 512


def prompts():
    a = [151644, 872, 198, 9707, 11, 1879, 0, 151645]  # <|im_start|>user\nHello, world!<|im_end|>
    b = np.random.default_rng(1).integers(0, 151936, size=20).tolist()  # may include special/padding ids
    c = np.random.default_rng(2).integers(0, 151643, size=80).tolist()  # > 64 tokens: crosses block sizes
    return [a, b, c]


def columns(vocab):
    """0..31, the special tokens 151643..151664, then an even spread over the rest: exactly 512, sorted."""
    fixed = sorted(set(range(32)) | set(c for c in range(151643, 151665) if c < vocab))
    taken = set(fixed)
    pool = [c for c in range(vocab) if c not in taken]
    extra = N_COLUMNS - len(fixed)
    spread = [pool[(i * len(pool)) // extra] for i in range(extra)]
    cols = sorted(taken | set(spread))
    assert len(cols) == N_COLUMNS
    return cols


def sig8(x):
    return float(f"{x:.8g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_json")
    ap.add_argument("--prompts", type=int, default=3, help="how many of the three prompts (fewer: a smaller fixture)")
    args = ap.parse_args()

    model = load_model(args.model_dir)
    synthetic = model["config"].get("qwen_ts_synthetic", {})
    preset, seed, overrides = synthetic.get("preset"), synthetic.get("seed"), synthetic.get("overrides")
    cols = columns(model["config"]["vocab_size"])
    single = os.path.join(args.model_dir, "model.safetensors")
    out = {
        "about": "Golden logits from tools/reference_qwen2.py, an independent float64 numpy reference of HF "
                 f"transformers' {model['config']['architectures'][0]} forward (weights widened from their stored "
                 f"dtype), run on a synthetic model made by `node dist/src/cli/make-model.js --preset {preset} "
                 f"--out DIR --seed {seed}`" + (f" with overrides {json.dumps(overrides)}" if overrides else "") + ". Per position: logits at `columns`, and the full-vocab "
                 "argmax, max and logsumexp; `layers[l][pos]`: the residual stream after layer l. "
                 "Floats rounded to 8 significant digits.",
        "command": f"python3 tools/make_goldens.py MODEL_DIR {args.out_json}"
                   + (f" --prompts {args.prompts}" if args.prompts != 3 else ""),
        "model": {
            "preset": preset,
            "seed": seed,
            "overrides": overrides,
            "safetensorsSha256": sha256(single) if os.path.exists(single) else None,
        },
        "columns": cols,
        "prompts": [],
    }
    for ids in prompts()[: args.prompts]:
        logits, layers = forward(model, ids, return_layers=True)
        m = logits.max(axis=1)
        lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
        out["prompts"].append({
            "tokenIds": ids,
            "logits": [[sig8(v) for v in row] for row in logits[:, cols]],
            "argmax": logits.argmax(axis=1).tolist(),
            "max": [sig8(v) for v in m],
            "logsumexp": [sig8(v) for v in lse],
            "layers": [[[sig8(v) for v in row] for row in h] for h in layers],
        })
        print(f"prompt of {len(ids)} tokens: argmax {out['prompts'][-1]['argmax'][:8]}...", file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    with open(args.out_json, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
