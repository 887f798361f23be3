"""Writes a GGUF of a Qwen2 safetensors model folder (e.g. the synthetic Qwen2.5-0.5B of
`npm run bench`), so that llama.cpp's llama-bench can run the same weights beside qwen-ts.
Uses llama.cpp's gguf-py (not copied: imported from the clone) and numpy; reads the safetensors
file itself. Tensor names and metadata follow llama.cpp's convert_hf_to_gguf.py for qwen2 (no q/k
permutation); the vocabulary comes from tokenizer.json (gpt2-style BPE, as Qwen2 uses).

usage: python3 tools/gguf_from_safetensors.py MODEL_DIR OUT.gguf [--type q8_0|f32|f16]
       [--gguf-py /work/llama/llama.cpp/gguf-py]

Then, for the long-context table (README, "Long contexts"):
  llama-bench -m OUT.gguf -t 2 -p 64 -n 3 -d 128,1024,2048,4096,16384
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a : base + b]
        if info["dtype"] == "BF16":
            x = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            x = raw.view(np.float16).astype(np.float32)
        elif info["dtype"] == "F32":
            x = raw.view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {info['dtype']} not handled")
        tensors[name] = x.reshape(info["shape"])
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="q8_0", choices=["q8_0", "f32", "f16"])
    ap.add_argument("--gguf-py", default="/work/llama/llama.cpp/gguf-py")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf
    from gguf.quants import quantize

    cfg = json.load(open(os.path.join(args.model_dir, "config.json")))
    if cfg.get("model_type", "qwen2") != "qwen2":
        raise SystemExit("only qwen2 models are handled")
    tensors = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    tok = json.load(open(os.path.join(args.model_dir, "tokenizer.json")))

    w = gguf.GGUFWriter(args.out, "qwen2")
    w.add_name(os.path.basename(os.path.normpath(args.model_dir)))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg.get("rope_theta", 1e6))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    w.add_file_type(file_type[args.type])

    # Vocabulary: ids 0..vocab_size-1; ids without a token (the padding rows of the embedding) get
    # placeholder names, as convert_hf_to_gguf.py does.
    vocab_size = cfg["vocab_size"]
    names = {i: t for t, i in tok["model"]["vocab"].items()}
    types = {}
    for added in tok.get("added_tokens", []):
        names[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    tokens, token_types = [], []
    for i in range(vocab_size):
        if i in names:
            tokens.append(names[i])
            token_types.append(types.get(i, gguf.TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            token_types.append(gguf.TokenType.UNUSED)
    merges = tok["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_eos_token_id(cfg.get("eos_token_id", 151645))
    w.add_bos_token_id(cfg.get("bos_token_id", 151643))
    w.add_add_bos_token(False)

    def put(name, x, quantizable):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if quantizable and args.type == "q8_0" and x.ndim == 2 and x.shape[1] % 32 == 0:
            w.add_tensor(name, quantize(x, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif quantizable and args.type == "f16" and x.ndim == 2:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, x)

    put("token_embd.weight", tensors["model.embed_tokens.weight"], True)
    put("output_norm.weight", tensors["model.norm.weight"], False)
    if "lm_head.weight" in tensors and not cfg.get("tie_word_embeddings", False):
        put("output.weight", tensors["lm_head.weight"], True)
    names_of = {
        "input_layernorm.weight": ("attn_norm.weight", False),
        "self_attn.q_proj.weight": ("attn_q.weight", True),
        "self_attn.q_proj.bias": ("attn_q.bias", False),
        "self_attn.k_proj.weight": ("attn_k.weight", True),
        "self_attn.k_proj.bias": ("attn_k.bias", False),
        "self_attn.v_proj.weight": ("attn_v.weight", True),
        "self_attn.v_proj.bias": ("attn_v.bias", False),
        "self_attn.o_proj.weight": ("attn_output.weight", True),
        "post_attention_layernorm.weight": ("ffn_norm.weight", False),
        "mlp.gate_proj.weight": ("ffn_gate.weight", True),
        "mlp.up_proj.weight": ("ffn_up.weight", True),
        "mlp.down_proj.weight": ("ffn_down.weight", True),
    }
    for layer in range(cfg["num_hidden_layers"]):
        for hf, (gg, quantizable) in names_of.items():
            put(f"blk.{layer}.{gg}", tensors[f"model.layers.{layer}.{hf}"], quantizable)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
