#!/usr/bin/env python3
"""Compare two GGUF files tensor by tensor: types and bytes (e.g. llama-quantize's output against
`qwen-ts convert`'s). Exit code 1 if any differ.
usage: python3 tools/gguf/compare-tensors.py A.gguf B.gguf"""
import os, sys
import numpy as np

sys.path.insert(0, os.environ.get("GGUF_PY", "/work/llama/llama.cpp/gguf-py"))
import gguf  # noqa: E402

a, b = (gguf.GGUFReader(p) for p in sys.argv[1:3])
ta, tb = ({t.name: t for t in r.tensors} for r in (a, b))
bad = 0
if set(ta) != set(tb):
    print("tensor names differ:", sorted(set(ta) ^ set(tb)))
    bad += 1
for n in sorted(set(ta) & set(tb)):
    if ta[n].tensor_type != tb[n].tensor_type:
        print(f"{n}: type {ta[n].tensor_type.name} vs {tb[n].tensor_type.name}")
        bad += 1
    elif not np.array_equal(np.asarray(ta[n].data), np.asarray(tb[n].data)):
        print(f"{n}: {ta[n].tensor_type.name} bytes differ")
        bad += 1
print(f"{len(ta)} tensors, {bad} differences")
sys.exit(1 if bad else 0)
