#!/bin/sh
# Regenerates the K-quant fixtures of test/fixtures/gguf: a small qwen2 whose rows are multiples of
# 256 (hidden 256, 2 layers, the 512-token stories260K vocabulary) written by llama.cpp's gguf-py
# as F32 and quantized by llama.cpp's own llama-quantize to Q4_K_M (Q4_K, Q6_K tensors), Q5_K_M
# (Q5_K, Q6_K), Q4_1, Q5_1, Q3_K_M and Q2_K (TYPES="..." for some of them); for each, the exact float64 logits of tools/gguf/oracle.py on fixed tokens and
# llama.cpp's own deviation from that exact forward (tools/gguf/fidelity.py: llama-server's
# log-probabilities), which the tests allow three times of.
# usage: sh tools/gguf/make-kquant-fixtures.sh   (repository root, after npx tsc; llama.cpp built)
# env:   LLAMA_BIN (default /work/llama/llama.cpp/build/bin), PYTHONPATH with llama.cpp's gguf-py
set -e
OUT=test/fixtures/gguf
BIN=${LLAMA_BIN:-/work/llama/llama.cpp/build/bin}
TMP=$(mktemp -d)
node -e "
const { writeSyntheticModel } = await import('./dist/src/model/synthetic.js');
const fs = await import('node:fs');
const shape = { hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 512, max_position_embeddings: 2048 };
writeSyntheticModel('$TMP/hf', { preset: 'tiny', seed: 2, dtype: 'f32', overrides: shape });
for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
  fs.copyFileSync('assets/stories260K/' + f, '$TMP/hf/' + f);
" --input-type=module
python3 tools/gguf/hf_to_gguf.py "$TMP/hf" "$TMP/f32.gguf" --type f32 >/dev/null
TOKENS=1,403,261,375,100,42,7,300
for t in ${TYPES:-Q4_K_M Q5_K_M Q4_1 Q5_1 Q3_K_M Q2_K}; do
  f="$OUT/qwen2-k.$t.gguf"
  "$BIN/llama-quantize" "$TMP/f32.gguf" "$f" "$t" 1 >/dev/null 2>&1
  python3 tools/gguf/oracle.py "$f" "$TOKENS" "$TMP/$t.oracle.json" >/dev/null
  dev=$(LLAMA_BIN="$BIN" python3 tools/gguf/fidelity.py "$f" | sed 's/.*llama.cpp-vs-exact \([^\t]*\).*/\1/')
  python3 -c "
import json
o = json.load(open('$TMP/$t.oracle.json'))
o['logits'] = [[float('%.7g' % v) for v in row] for row in o['logits']]
o['llamaCppDeviation'] = float('$dev')
o['generator'] = 'tools/gguf/make-kquant-fixtures.sh (oracle.py; llama.cpp deviation by fidelity.py)'
json.dump(o, open('$OUT/qwen2-k.$t.oracle.json', 'w'), separators=(',', ':'))
"
  echo "$f: llama.cpp deviates $dev from the exact forward"
done
rm -rf "$TMP"
