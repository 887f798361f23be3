"""Fixtures for test/ggml.test.ts: ggml's quantization and dequantization of a few rows, per type.

    python3 tools/make_ggml_fixtures.py [--llama /work/llama/llama.cpp]

Builds tools/ggml-quant-ref.c against llama.cpp's libggml-base (build/bin), runs it for every type
(ggml_quantize_chunk without an importance matrix: the *_ref quantizers llama-quantize uses, then the
type's to_float), checks gguf-py's gguf.quants against it (dequantize for every type it implements,
quantize where it has one), and writes test/fixtures/ggml/input.f32 (ROWS x COLS float32) and per
type <name>.q (the quantized bytes) and <name>.f32 (their dequantization).
"""

import argparse
import os
import subprocess
import sys

import numpy as np

ROWS, COLS = 4, 512
TYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "IQ4_NL": 20, "IQ4_XS": 23, "BF16": 30,
}


def make_input() -> np.ndarray:
    rng = np.random.default_rng(17)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32) * np.float32(0.05)
    x[0, :32] = 0  # an all-zero block
    x[0, 40] = 3.0  # an outlier
    x[0, 300:332] = 0.3  # a constant block
    x[1] *= np.float32(1e-4)  # scales that are f16 subnormals
    x[2] = rng.uniform(0, 2, COLS).astype(np.float32)  # all positive: min != 0
    x[3] = np.float32(60) * rng.standard_normal(COLS).astype(np.float32)  # large values
    x[3, 100] = -400.0
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama", default="/work/llama/llama.cpp")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "test", "fixtures", "ggml")
    os.makedirs(out_dir, exist_ok=True)
    sys.path.insert(0, os.path.join(args.llama, "gguf-py"))
    from gguf import GGMLQuantizationType, quants  # noqa: E402

    exe = os.path.join(out_dir, "..", "..", "..", "node_modules", ".ggml-quant-ref")
    lib = os.path.join(args.llama, "build", "bin")
    subprocess.run(
        ["cc", "-O1", "-I", os.path.join(args.llama, "ggml", "include"), os.path.join(root, "tools", "ggml-quant-ref.c"),
         "-o", exe, "-L", lib, "-lggml-base", f"-Wl,-rpath,{lib}"],
        check=True,
    )
    x = make_input()
    x.tofile(os.path.join(out_dir, "input.f32"))
    for name, code in TYPES.items():
        res = subprocess.run([exe, str(code), str(ROWS), str(COLS)], input=x.tobytes(), capture_output=True, check=True)
        q = np.frombuffer(res.stdout[: -ROWS * COLS * 4], dtype=np.uint8).reshape(ROWS, -1)
        deq = np.frombuffer(res.stdout[-ROWS * COLS * 4 :], dtype=np.float32).reshape(ROWS, COLS)
        qtype = GGMLQuantizationType(code)
        py_deq = quants.dequantize(q, qtype)
        assert np.array_equal(py_deq.view(np.uint32), deq.view(np.uint32)), f"{name}: gguf-py dequantize differs from ggml"
        try:
            py_q = quants.quantize(x, qtype)
            assert np.array_equal(np.ascontiguousarray(py_q).view(np.uint8).reshape(q.shape), q), f"{name}: gguf-py quantize differs"
            checked = "quantize + dequantize"
        except NotImplementedError:
            checked = "dequantize"
        q.tofile(os.path.join(out_dir, f"{name}.q"))
        deq.tofile(os.path.join(out_dir, f"{name}.f32"))
        print(f"{name}: {q.nbytes} bytes, gguf-py agrees ({checked})")


if __name__ == "__main__":
    main()
