#!/bin/sh
# Round trip with llama.cpp: a model folder converted by `qwen-ts convert` and by llama.cpp's tools
# (gguf-py writer tools/gguf/hf_to_gguf.py + llama-quantize) gives byte-identical tensors, and
# llama-perplexity runs our file with the same perplexity as its own.
# usage: sh tools/gguf/roundtrip.sh [MODEL_DIR] [TYPE]   (default assets/stories260K q8_0; from the repo root)
# env:   LLAMA_BIN (default /work/llama/llama.cpp/build/bin)
set -e
DIR=${1:-assets/stories260K}
TYPE=${2:-q8_0}
BIN=${LLAMA_BIN:-/work/llama/llama.cpp/build/bin}
TMP=$(mktemp -d)
UPPER=$(echo "$TYPE" | tr a-z A-Z)
python3 tools/gguf/hf_to_gguf.py "$DIR" "$TMP/llamacpp.f32.gguf" --type f32 >/dev/null
if [ "$TYPE" = f32 ]; then cp "$TMP/llamacpp.f32.gguf" "$TMP/llamacpp.gguf"; else "$BIN/llama-quantize" "$TMP/llamacpp.f32.gguf" "$TMP/llamacpp.gguf" "$UPPER" 1 >/dev/null 2>&1; fi
node bin/qwen-ts.js convert "$DIR" --out "$TMP/ours.gguf" --type "$TYPE"
python3 tools/gguf/compare-tensors.py "$TMP/llamacpp.gguf" "$TMP/ours.gguf"
cat test/fixtures/stories260K/*.txt test/fixtures/stories260K/*.txt test/fixtures/stories260K/*.txt > "$TMP/text.txt"
for m in llamacpp ours; do
  echo "$m: $("$BIN/llama-perplexity" -m "$TMP/$m.gguf" -f "$TMP/text.txt" -c 128 -t 1 2>&1 | grep 'Final estimate')"
done
rm -rf "$TMP"
