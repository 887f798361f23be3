#!/usr/bin/env python3
"""Independent reference tokenizer for Qwen2.5, used to produce the token-id goldens
that test/tokenizer.test.ts compares @huggingface/tokenizers against.

Why this exists: the goldens must come from an implementation that shares no code with the
one under test. Python `tokenizers`/`transformers` are not installable here (no PyPI), so this is
a from-scratch byte-level BPE written after the *slow* Qwen2Tokenizer of transformers
(tokenization_qwen2.py), which is itself a GPT-2 style tokenizer:

  1. split the text on added tokens (longest match first, like the HF added-token trie);
  2. NFC-normalise each remaining piece (Qwen2Tokenizer / the tokenizer.json NFC normalizer);
  3. pre-tokenize with Qwen2's regex (PRETOKENIZE_REGEX, hard-coded below, not read from
     tokenizer.json) using the third-party `regex` module, which supports \\p{L} and (?i:...);
  4. map each piece's UTF-8 bytes through GPT-2's bytes_to_unicode table;
  5. apply merges by rank (lowest rank first) until none applies, then look up vocab ids.

Data comes from vocab.json + merges.txt (the slow-tokenizer files) and tokenizer_config.json
(added tokens). If vocab.json/merges.txt are missing (e.g. in the test fixture dir) it falls
back to the "model" section of tokenizer.json.

Usage:
  python3 tools/tokenizer_reference.py MODEL_DIR encode "some text"
  python3 tools/tokenizer_reference.py MODEL_DIR goldens OUT.json   # writes the golden file
Requires: python3 (3.8+) and the `regex` module (Debian: python3-regex).
"""
import json
import os
import sys
import unicodedata
from functools import lru_cache

import regex

# Copied from transformers/models/qwen2/tokenization_qwen2.py (PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


class ReferenceBPE:
    def __init__(self, model_dir):
        vocab_path = os.path.join(model_dir, "vocab.json")
        merges_path = os.path.join(model_dir, "merges.txt")
        if os.path.exists(vocab_path) and os.path.exists(merges_path):
            with open(vocab_path, encoding="utf-8") as f:
                self.encoder = json.load(f)
            with open(merges_path, encoding="utf-8") as f:
                lines = f.read().split("\n")
            merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
            self.data_source = "vocab.json + merges.txt"
        else:
            with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
                model = json.load(f)["model"]
            self.encoder = model["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
            self.data_source = "tokenizer.json model.vocab/model.merges"
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self.added = {v["content"]: int(k) for k, v in cfg["added_tokens_decoder"].items()}
        # Longest first so that a token which is a prefix of another cannot win.
        self.added_sorted = sorted(self.added, key=len, reverse=True)
        self.byte_encoder = bytes_to_unicode()
        self.pat = regex.compile(PRETOKENIZE_REGEX)

    @lru_cache(maxsize=None)
    def bpe(self, token):
        word = tuple(token)
        if len(word) < 2:
            return word
        while True:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                return word
            first, second = best
            new_word = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                return word

    def split_added(self, text):
        """Yield (is_added, piece) by scanning left to right for the longest added token."""
        i = 0
        start = 0
        while i < len(text):
            hit = None
            if text[i] == "<":  # every Qwen2.5 added token starts with '<'
                for tok in self.added_sorted:
                    if text.startswith(tok, i):
                        hit = tok
                        break
            if hit is None:
                i += 1
                continue
            if start < i:
                yield False, text[start:i]
            yield True, hit
            i += len(hit)
            start = i
        if start < len(text):
            yield False, text[start:]

    def encode(self, text):
        ids = []
        for is_added, piece in self.split_added(text):
            if is_added:
                ids.append(self.added[piece])
                continue
            piece = unicodedata.normalize("NFC", piece)
            for word in self.pat.findall(piece):
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


# The golden strings: each exercises one thing that a byte-level BPE can get wrong.
GOLDEN_STRINGS = [
    ("english", "Hello world! The quick brown fox jumps over the lazy dog."),
    ("contractions", "I'm sure it's fine, they'RE here and we'Ve LL'd it."),
    ("chinese", "跟我讲讲股市运行的逻辑"),
    ("chinese_mixed", "你好，世界！Qwen2.5 是阿里云的大语言模型。"),
    ("japanese_korean", "こんにちは世界 안녕하세요"),
    ("code_python", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"),
    ("code_js_tabs", "function f(x) {\n\tconst y = x ** 2; // square\n\treturn `${y}`;\n}"),
    ("numbers", "12345 3.14159 -42 1e10 0x1F 2024-06-01 1,000,000"),
    ("emoji", "I love 🍕 and 🎉! 👍🏽"),
    ("emoji_zwj", "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🧑🏿‍💻 coder"),
    ("whitespace", "   leading and trailing   "),
    ("whitespace_runs", "a  b   c    d\t\te \t f"),
    ("newlines", "line1\n\nline2\n\n\n\nline3\r\nline4\n"),
    ("chat_specials", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    ("endoftext", "end of doc<|endoftext|>start of next"),
    ("tool_tokens", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
    ("fim_tokens", "<|fim_prefix|>def add(a, b):<|fim_suffix|>\n<|fim_middle|>"),
    ("not_special", "<|im_start> <|foo|> <im_end|>"),
    ("nfc", "cafe\u0301 vs caf\u00e9"),
    ("symbols", "Price: $5.99 (50% off!!!) -> ~~~ @user #tag & <html>"),
    ("empty", ""),
]

# Plus random concatenations of tricky fragments (fixed seed, so the file is reproducible):
# they catch interactions between pre-tokenizer branches that hand-written cases miss.
FUZZ_PIECES = [
    "hello", " world", "  ", "\n", "\n\n", "\t", "123", "4.5", "你好", "世界", "的", "😀", "👩\u200d🚀",
    "🇯🇵", "'s", "'LL", "<|im_start|>", "<|im_end|>", "<tool_call>", "<|", "|>", "é", "e\u0301", "ß",
    "Ωμέγα", "привет", "مرحبا", "नमस्ते", "{", "}", "()", "=>", "    ", " \n ", "\r\n", "...", "---",
    "ﬁ", "\u200b", "\u00a0", "x\u0303", "𝔘", "ﾊﾟ", "한국어",
]


def fuzz_strings(n=30, seed=1):
    import random

    rnd = random.Random(seed)
    return [("fuzz_%02d" % i, "".join(rnd.choice(FUZZ_PIECES) for _ in range(rnd.randint(2, 12)))) for i in range(n)]


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    bpe = ReferenceBPE(argv[1])
    if argv[2] == "encode":
        print(json.dumps(bpe.encode(argv[3])))
        return 0
    if argv[2] == "goldens":
        out = {
            "generator": "tools/tokenizer_reference.py (from-scratch Python byte-level BPE, "
            "`regex` module %s, Python %s)" % (regex.__version__, sys.version.split()[0]),
            "command": "python3 tools/tokenizer_reference.py /work/shared/models/Qwen2.5-0.5B-Instruct goldens test/fixtures/tokenizer-goldens.json",
            "data": "Qwen/Qwen2.5-0.5B-Instruct revision 7ae557604adf67be50417f59c2c2f167def9a775, " + bpe.data_source,
            "cases": [{"name": n, "text": s, "ids": bpe.encode(s)} for n, s in GOLDEN_STRINGS + fuzz_strings()],
        }
        # One case per line keeps the file readable and its diffs small.
        cases = out.pop("cases")
        head = json.dumps(out, ensure_ascii=False, indent=1)[:-2]
        body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
        with open(argv[3], "w", encoding="utf-8") as f:
            f.write(head + ',\n "cases": [\n' + body + "\n ]\n}\n")
        out["cases"] = cases
        print("wrote %d cases to %s" % (len(out["cases"]), argv[3]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
