"""Writes golden embeddings for the TypeScript engine's tests: the float64 numpy reference
(tools/reference_qwen2.py, final_hidden) of the final-norm hidden states, pooled (last token, mean
or first) and L2-normalised as the model folder's sentence-transformers files say (last token and
normalised without them), for a fixed set of token id lists.

usage: python3 tools/make_embed_goldens.py MODEL_DIR OUT_JSON

MODEL_DIR is a synthetic model written by writeSyntheticModel (src/model/synthetic.ts; its
`embedding` option gives the Qwen3-Embedding layout); config.json's "qwen_ts_synthetic" (preset,
seed, overrides) and the pooling are copied into the fixture so its provenance is clear.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_qwen2 import final_hidden, load_model


def inputs():
    a = [9707, 11, 1879, 0, 151643]  # "Hello, world!" + <|endoftext|> (the embedding post-processor)
    b = [151643]  # one token
    c = np.random.default_rng(3).integers(0, 151643, size=17).tolist()
    d = np.random.default_rng(4).integers(0, 151643, size=70).tolist()  # > 64 rows: two prefill chunks
    return [a, b, c, d]


def pooling_of(model_dir):
    """(mode, normalize) from modules.json and 1_Pooling/config.json, as sentence-transformers reads them."""
    modules_file = os.path.join(model_dir, "modules.json")
    if not os.path.exists(modules_file):
        return "last", True
    mode, normalize = None, False
    with open(modules_file) as f:
        for m in json.load(f):
            kind = m["type"].split(".")[-1]
            if kind == "Normalize":
                normalize = True
            elif kind == "Pooling":
                with open(os.path.join(model_dir, m["path"], "config.json")) as f2:
                    cfg = json.load(f2)
                flags = {"pooling_mode_lasttoken": "last", "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
                (mode,) = [v for k, v in flags.items() if cfg.get(k)]
    return mode, normalize


def pool(h, mode):
    if mode == "last":
        return h[-1]
    if mode == "mean":
        return h.mean(axis=0)
    return h[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_json")
    args = ap.parse_args()
    model = load_model(args.model_dir)
    mode, normalize = pooling_of(args.model_dir)
    cases = []
    for ids in inputs():
        h, _ = final_hidden(model, ids)
        v = pool(h, mode)
        if normalize:
            v = v / max(np.linalg.norm(v), 1e-12)
        cases.append({"ids": ids, "embedding": [float(f"{x:.10g}") for x in v]})
    out = {
        "synthetic": model["config"].get("qwen_ts_synthetic"),
        "architectures": model["config"].get("architectures"),
        "pooling": mode,
        "normalize": normalize,
        "cases": cases,
    }
    with open(args.out_json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
