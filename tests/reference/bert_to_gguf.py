#!/usr/bin/env python3
"""bert_to_gguf.py: converts a sentence-transformers BERT snapshot (all-MiniLM-L6-v2) into a
llama.cpp `bert` GGUF embedding model, the layout llama.cpp's own converter writes: tensor names
token_embd / position_embd / token_types / token_embd_norm and blk.N.{attn_q,attn_k,attn_v,
attn_output,attn_output_norm,ffn_up,ffn_down,layer_output_norm}; the WordPiece vocabulary in
its "phantom space" form (a word-initial piece gets U+2581 in front, a `##` piece loses the
`##`, [SPECIAL] tokens stay); bert.pooling_type from 1_Pooling; causal attention off.

    python3 tests/reference/bert_to_gguf.py models/all-MiniLM-L6-v2 out.gguf [--type F32|F16|Q8_0]

F16: every matrix in F16 but token_types (F32, as llama.cpp needs), vectors (norms, biases) F32. Q8_0: the six linear layers of each block
in Q8_0, the embedding tables F16, vectors F32 (as llama.cpp's converter with --outtype q8_0
keeps small tensors out of Q8_0). Needs numpy, safetensors and gguf (the Python package)."""
import argparse
import json
import os

import numpy as np

HF_TO_GGUF = {
    "attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm",
}
LINEAR = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"}


def gguf_name(hf):
    n = hf[5:] if hf.startswith("bert.") else hf
    fixed = {"embeddings.word_embeddings.weight": "token_embd.weight",
             "embeddings.position_embeddings.weight": "position_embd.weight",
             "embeddings.token_type_embeddings.weight": "token_types.weight",
             "embeddings.LayerNorm.weight": "token_embd_norm.weight",
             "embeddings.LayerNorm.bias": "token_embd_norm.bias"}
    if n in fixed:
        return fixed[n]
    if not n.startswith("encoder.layer."):
        return None  # pooler.* and the like: not used by an embedding model
    rest = n[len("encoder.layer."):]
    layer, rest = rest.split(".", 1)
    base, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{HF_TO_GGUF[base]}.{kind}"


def phantom(tok):
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    if tok.startswith("##"):
        return tok[2:]
    return "\u2581" + tok


def convert(snapshot, out, qtype="F16"):
    import gguf
    from safetensors.numpy import load_file
    cfg = json.load(open(os.path.join(snapshot, "config.json")))
    vocab = open(os.path.join(snapshot, "vocab.txt"), encoding="utf-8").read().split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    pool = json.load(open(os.path.join(snapshot, "1_Pooling", "config.json")))
    pooling = (gguf.PoolingType.MEAN if pool.get("pooling_mode_mean_tokens") else
               gguf.PoolingType.CLS if pool.get("pooling_mode_cls_token") else None)
    if pooling is None:
        raise SystemExit("only mean or cls pooling converts to a GGUF pooling_type")
    w = gguf.GGUFWriter(out, "bert")
    w.add_name(os.path.basename(os.path.normpath(snapshot)))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(pooling)
    w.add_token_type_count(cfg["type_vocab_size"])
    w.add_tokenizer_model("bert")
    toks = [phantom(t) for t in vocab]
    w.add_token_list(toks)
    w.add_token_types([3 if (t.startswith("[") and t.endswith("]")) else 1 for t in vocab])
    ids = {t: i for i, t in enumerate(vocab)}
    w.add_bos_token_id(ids["[CLS]"])  # llama.cpp's WordPiece starts a text with BOS: [CLS]
    w.add_unk_token_id(ids["[UNK]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)
    w.add_add_eos_token(False)
    tensors = load_file(os.path.join(snapshot, "model.safetensors"))
    for hf in sorted(tensors):
        name = gguf_name(hf)
        if name is None:
            continue
        x = tensors[hf].astype(np.float32)
        if x.ndim == 1 or name == "token_types.weight":  # llama.cpp adds token_types as a view: F32 only
            w.add_tensor(name, x)
        elif qtype == "Q8_0" and name.startswith("blk.") and name.split(".")[2] in LINEAR:
            w.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif qtype in ("F16", "Q8_0"):
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("snapshot")
    ap.add_argument("out")
    ap.add_argument("--type", default="F16", choices=["F32", "F16", "Q8_0"])
    a = ap.parse_args()
    convert(a.snapshot, a.out, a.type)


if __name__ == "__main__":
    main()
