#!/bin/sh
# Regenerates test/fixtures/gguf: three small F32 GGUFs (qwen2, qwen3, llama with llama3 rope
# scaling; hidden 32, 2 layers, the 512-token stories260K vocabulary) written by llama.cpp's gguf-py
# from synthetic HF folders, and for each the exact float64 logits of tools/gguf/oracle.py
# (rounded to 7 digits) plus, when llama.cpp is built, its greedy tokens (tools/gguf/llama-greedy.sh).
# usage: sh tools/gguf/make-fixtures.sh   (from the repository root, after npx tsc -p tsconfig.json)
set -e
OUT=test/fixtures/gguf
TMP=$(mktemp -d)
node tools/gguf/make-synthetic.mjs "$TMP"
TOKENS=1,403,261,375,100,42,7,300
for f in qwen2 qwen3 llama; do
  python3 tools/gguf/hf_to_gguf.py "$TMP/$f" "$OUT/$f.f32.gguf" --type f32
  python3 tools/gguf/oracle.py "$OUT/$f.f32.gguf" "$TOKENS" "$TMP/$f.oracle.json"
  python3 -c "
import json, sys
o = json.load(open('$TMP/$f.oracle.json'))
o['logits'] = [[float('%.7g' % v) for v in row] for row in o['logits']]
o['generator'] = 'tools/gguf/oracle.py (float64 forward of the gguf-py-dequantized weights)'
json.dump(o, open('$OUT/$f.oracle.json', 'w'), separators=(',', ':'))
"
done
rm -rf "$TMP"
