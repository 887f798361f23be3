"""Golden prompt log-probabilities and perplexities of stories260K from the float64 numpy reference
(tools/reference_qwen2.py), for test/prompt-logprobs.test.ts.

usage: python3 tools/make_logprob_goldens.py assets/stories260K test/fixtures/stories260K/perplexity-stories.ids.json OUT_JSON

The ids are the tokens of perplexity-stories.txt (BOS first) as qwen-ts's tokenizer gives them (the
test checks that). Prompt log-probabilities: log_softmax of each position's logits, the next
token's value and the top 3, on the first PROMPT_TOKENS ids. Perplexity: llama.cpp's
llama-perplexity windows (tools/perplexity/perplexity.cpp): windows of ctx tokens, the first
replaced by BOS, positions ctx/2 .. ctx-2 scoring the token after them; PPL = exp(mean nll),
error = sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)) * PPL.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_qwen2 import forward, load_model

PROMPT_TOKENS = 150
TOP = 3
CTXS = [128, 512]


def log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))


def perplexity(model, ids, ctx, bos):
    nll = nll2 = 0.0
    count = 0
    for i in range(len(ids) // ctx):
        window = list(ids[i * ctx : (i + 1) * ctx])
        window[0] = bos
        lp = log_softmax(forward(model, window))
        for j in range(ctx // 2, ctx - 1):
            v = -lp[j, window[j + 1]]
            nll += v
            nll2 += v * v
        count += ctx - ctx // 2 - 1
    mean = nll / count
    ppl = float(np.exp(mean))
    return {"ctx": ctx, "chunks": len(ids) // ctx, "ppl": ppl, "error": float(np.sqrt((nll2 / count - mean * mean) / (count - 1)) * ppl)}


def main():
    model_dir, ids_path, out_path = sys.argv[1:4]
    model = load_model(model_dir)
    ids = json.load(open(ids_path))
    prompt = ids[:PROMPT_TOKENS]
    lp = log_softmax(forward(model, prompt))
    positions = [None]
    for j in range(1, len(prompt)):
        row = lp[j - 1]
        top = np.argsort(-row, kind="stable")[:TOP]
        positions.append(
            {"token": prompt[j], "logprob": float(row[prompt[j]]), "top": [[int(t), float(row[t])] for t in top]}
        )
    bos = model["config"]["bos_token_id"]
    out = {
        "model": "assets/stories260K",
        "reference": "tools/reference_qwen2.py (float64)",
        "promptTokenIds": prompt,
        "promptLogprobs": positions,
        "perplexity": [perplexity(model, ids, ctx, bos) for ctx in CTXS],
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
