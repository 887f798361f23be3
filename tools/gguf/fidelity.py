#!/usr/bin/env python3
"""llama.cpp's and our deviation from the exact forward, on one GGUF. llama-server (started here
on 127.0.0.1) greedily continues PROMPT_IDS for N tokens with n_probs = the vocabulary, giving its
log-probabilities of every token at each generated position; tools/gguf/oracle.py gives the exact
float64 logits of the same token sequence, and tools/gguf/ours-logits.mjs (via --dump) ours.
Compared as log-softmax (llama-server reports log-probabilities, not raw logits).

usage: python3 tools/gguf/fidelity.py FILE.gguf [PROMPT_IDS] [N]
env:   LLAMA_BIN (default /work/llama/llama.cpp/build/bin)
"""
import json, os, subprocess, sys, tempfile, time, urllib.request
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("LLAMA_BIN", "/work/llama/llama.cpp/build/bin")


def logsoftmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def main():
    path = sys.argv[1]
    prompt = [int(t) for t in (sys.argv[2] if len(sys.argv) > 2 else "1,403,261,375").split(",")]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    port = 18000 + os.getpid() % 1000
    srv = subprocess.Popen([f"{BIN}/llama-server", "-m", path, "--host", "127.0.0.1", "--port", str(port),
                            "-t", "1", "-c", "256", "-np", "1",
                            # an f32 KV cache: its default f16 cache alone moves log-probabilities by ~1e-3
                            "--cache-type-k", "f32", "--cache-type-v", "f32", "--flash-attn", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        body = json.dumps({"prompt": prompt, "n_predict": n, "n_probs": 512, "temperature": 0,
                           "top_k": 1, "samplers": ["top_k"], "cache_prompt": False}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"})
        res = json.load(urllib.request.urlopen(req, timeout=120))
    finally:
        srv.terminate()
        srv.wait()
    probs = res["completion_probabilities"]
    gen = [p["id"] for p in probs]
    tokens = prompt + gen
    with tempfile.TemporaryDirectory() as tmp:
        oracle = os.path.join(tmp, "oracle.json")
        subprocess.run([sys.executable, f"{HERE}/oracle.py", path, ",".join(map(str, tokens)), oracle], check=True,
                       stdout=subprocess.DEVNULL)
        exact = json.load(open(oracle))["logits"]
        ours_file = os.path.join(tmp, "ours.json")
        subprocess.run(["node", f"{HERE}/ours-logits.mjs", path, oracle, "--dump", ours_file], check=True,
                       stdout=subprocess.DEVNULL)
        ours = json.load(open(ours_file))["logits"]
    dl, do = 0.0, 0.0
    greedy_llama_ok = greedy_ours_same = 0
    for i, p in enumerate(probs):
        pos = len(prompt) - 1 + i
        ex, ou = logsoftmax(exact[pos]), logsoftmax(ours[pos])
        top = p.get("top_logprobs") or p.get("top_probs")
        for t in top:
            lp = t["logprob"] if "logprob" in t else np.log(max(t["prob"], 1e-45))
            dl = max(dl, abs(lp - ex[t["id"]]))
        do = max(do, float(np.abs(ou - ex).max()))
        greedy_llama_ok += int(np.argmax(exact[pos]) == gen[i])
        greedy_ours_same += int(np.argmax(ours[pos]) == gen[i])
    print(f"{os.path.basename(path)}\tllama.cpp-vs-exact {dl:.2e}\tours-vs-exact {do:.2e}\t"
          f"llama.cpp greedy = exact argmax {greedy_llama_ok}/{len(probs)}\tour argmax = llama.cpp's token {greedy_ours_same}/{len(probs)}")


if __name__ == "__main__":
    main()
