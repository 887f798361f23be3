#!/usr/bin/env python3
"""An HF model folder (qwen2 / qwen3 / llama; safetensors F32/F16/BF16) -> an F32 or F16 GGUF, written
with llama.cpp's own gguf-py GGUFWriter and its tensor/metadata conventions (convert_hf_to_gguf.py
needs torch and transformers, which this machine lacks; this script does what it does for these
three families: the same keys, llama's q/k permutation, llama3's rope_freqs, the vocabulary).

usage: python3 tools/gguf/hf_to_gguf.py MODEL_DIR OUT.gguf [--type f32|f16]
env:   GGUF_PY (default /work/llama/llama.cpp/gguf-py)
"""
import json, math, os, struct, sys
import numpy as np

sys.path.insert(0, os.environ.get("GGUF_PY", "/work/llama/llama.cpp/gguf-py"))
import gguf  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "F32":
            t = np.frombuffer(raw, dtype=np.float32)
        elif e["dtype"] == "F16":
            t = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif e["dtype"] == "BF16":
            t = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {e['dtype']} not handled")
        out[name] = t.reshape(e["shape"])
    return out


def permute(w, n_head):  # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    args = sys.argv[1:]
    ftype = "f32"
    if "--type" in args:
        i = args.index("--type")
        ftype = args[i + 1]
        del args[i : i + 2]
    model_dir, out = args
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    arch = cfg.get("model_type", "qwen2")
    w = gguf.GGUFWriter(out, arch)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w.add_name(os.path.basename(os.path.normpath(model_dir)))
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    if arch == "qwen3" or head_dim != cfg["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch == "llama":
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if ftype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    add_vocab(w, model_dir, cfg["vocab_size"])

    tensors = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors"):
            tensors.update(read_safetensors(os.path.join(model_dir, f)))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    rs = cfg.get("rope_scaling") or {}
    if arch == "llama" and rs.get("rope_type") == "llama3":
        base = cfg.get("rope_theta", 10000.0)
        freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
        factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        factors = []
        for fr in freqs:
            wl = 2 * math.pi / fr
            if wl < old / hi:
                factors.append(1)
            elif wl > old / lo:
                factors.append(factor)
            else:
                smooth = (old / wl - lo) / (hi - lo)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    for name, t in tensors.items():
        if name.startswith("model.layers."):
            parts = name.split(".")
            bid, rest = parts[2], ".".join(parts[3:])
            gname = f"blk.{bid}.{layer[rest]}"
            if arch == "llama" and rest.startswith("self_attn.q_proj"):
                t = permute(t, n_head)
            if arch == "llama" and rest.startswith("self_attn.k_proj"):
                t = permute(t, n_kv)
        else:
            gname = names[name]
        # as convert_hf_to_gguf: 1-D tensors (norms, biases) stay F32
        dtype = np.float16 if ftype == "f16" and t.ndim == 2 else np.float32
        w.add_tensor(gname, np.ascontiguousarray(t.astype(dtype)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}")


def add_vocab(w, model_dir, n_vocab):
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    tcfg = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    model = tok["model"]
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    id_of = dict(model["vocab"])
    for a in added.values():
        id_of[a["content"]] = a["id"]
    def special_id(field):
        v = tcfg.get(field)
        if isinstance(v, dict):
            v = v.get("content")
        return id_of.get(v) if v is not None else None
    if model.get("byte_fallback"):
        # SentencePiece-style (llama): tokens by id, a score per token (-id: earlier pieces merge first), types
        tokens, scores, types = [], [], []
        by_id = {i: t for t, i in id_of.items()}
        for i in range(n_vocab):
            t = by_id.get(i, f"[PAD{i}]")
            tokens.append(t)
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
                scores.append(0.0)
            elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types.append(gguf.TokenType.BYTE)
                scores.append(0.0)
            elif i not in by_id:
                types.append(gguf.TokenType.UNUSED)
                scores.append(-1e9)
            else:
                types.append(gguf.TokenType.NORMAL)
                scores.append(float(-i))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(True)
    else:
        # byte-level BPE (qwen2): as convert_hf_to_gguf's get_vocab_base / _set_vocab_gpt2
        by_id = {i: t for t, i in id_of.items()}
        tokens, types = [], []
        for i in range(n_vocab):
            if i not in by_id:
                tokens.append(f"[PAD{i}]")
                types.append(gguf.TokenType.UNUSED)
            elif i in added:
                t = added[i]["content"]
                tokens.append(t)
                looks = t.startswith("<|") and t.endswith("|>")
                types.append(gguf.TokenType.CONTROL if added[i].get("special") or looks else gguf.TokenType.USER_DEFINED)
            else:
                tokens.append(by_id[i])
                types.append(gguf.TokenType.NORMAL)
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
    for field, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id),
                       ("unk_token", w.add_unk_token_id), ("pad_token", w.add_pad_token_id)):
        i = special_id(field)
        if i is not None:
            add(i)
    if isinstance(tcfg.get("add_bos_token"), bool):
        w.add_add_bos_token(tcfg["add_bos_token"])
    if isinstance(tcfg.get("add_eos_token"), bool):
        w.add_add_eos_token(tcfg["add_eos_token"])
    if isinstance(tcfg.get("chat_template"), str):
        w.add_chat_template(tcfg["chat_template"])


if __name__ == "__main__":
    main()
