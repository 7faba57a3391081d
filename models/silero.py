#!/usr/bin/env python3
"""Silero VAD: the project's own extractor of the 16 kHz weights from the package's ONNX model.

    silero.py convert --wheel SILERO_WHEEL --out FILE.safetensors

The registry package `silero-vad==6.2.3` ships `silero_vad/data/silero_vad.onnx` (its sha256 is
checked before use). That graph holds two models behind an `If` on the sample rate; the branch
for 16 kHz (an STFT as a 256-tap convolution with hop 128, four convolutions with ReLU, an LSTM
cell of 128, a 1x1 convolution and a sigmoid) is what the audio service runs, in its own Rust
code (services/audio/src/vad.rs). This script reads the ONNX protobuf with a minimal decoder of
its own (no onnx package needed), takes the branch's constant tensors and writes them as a
safetensors file (F32, little-endian) under short names. The package's own
`silero_vad_16k.safetensors` is *not* used: its weights are of another training run than the
ONNX model (they differ by up to 19 in places), and the ONNX model is the one Silero documents
and ONNX Runtime runs, so that is the one the Rust code is checked against.

The output is deterministic (names sorted, no metadata that changes), so its sha256 is pinned in
models/manifest.toml.

Needs numpy (Debian `python3-numpy`, installed by `just setup`) and nothing else.
"""

import argparse
import hashlib
import json
import struct
import sys
import zipfile

import numpy as np

ONNX_MEMBER = "silero_vad/data/silero_vad.onnx"
ONNX_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"

# Our name -> the suffix of the constant's name in the 16 kHz branch.
NAMES = {
    "stft.weight": "stft.forward_basis_buffer",
    "conv1.weight": "encoder.0.reparam_conv.weight",
    "conv1.bias": "encoder.0.reparam_conv.bias",
    "conv2.weight": "encoder.1.reparam_conv.weight",
    "conv2.bias": "encoder.1.reparam_conv.bias",
    "conv3.weight": "encoder.2.reparam_conv.weight",
    "conv3.bias": "encoder.2.reparam_conv.bias",
    "conv4.weight": "encoder.3.reparam_conv.weight",
    "conv4.bias": "encoder.3.reparam_conv.bias",
    "lstm.weight_ih": "decoder.rnn.weight_ih",
    "lstm.weight_hh": "decoder.rnn.weight_hh",
    "lstm.bias_ih": "decoder.rnn.bias_ih",
    "lstm.bias_hh": "decoder.rnn.bias_hh",
    "out.weight": "decoder.decoder.2.weight",
    "out.bias": "decoder.decoder.2.bias",
}
SHAPES = {
    "stft.weight": (258, 1, 256),
    "conv1.weight": (128, 129, 3), "conv1.bias": (128,),
    "conv2.weight": (64, 128, 3), "conv2.bias": (64,),
    "conv3.weight": (64, 64, 3), "conv3.bias": (64,),
    "conv4.weight": (128, 64, 3), "conv4.bias": (128,),
    "lstm.weight_ih": (512, 128), "lstm.weight_hh": (512, 128),
    "lstm.bias_ih": (512,), "lstm.bias_hh": (512,),
    "out.weight": (1, 128, 1), "out.bias": (1,),
}


def fail(msg):
    raise SystemExit("silero: " + msg)


# --- a minimal protobuf reader -------------------------------------------------------------------

def varint(buf, pos):
    shift = value = 0
    while True:
        if pos >= len(buf):
            fail("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of one message; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            fail("unsupported protobuf wire type %d" % wt)
        yield num, wt, v


def tensor(buf):
    """onnx.TensorProto -> (name, array) for FLOAT tensors (dims=1, data_type=2, float_data=4,
    name=8, raw_data=9)."""
    dims, dtype, name, raw, floats = [], None, "", None, []
    for num, wt, v in fields(buf):
        if num == 1:
            if wt == 0:
                dims.append(v)
            else:
                p = 0
                while p < len(v):
                    d, p = varint(v, p)
                    dims.append(d)
        elif num == 2:
            dtype = v
        elif num == 4:
            floats.append(np.frombuffer(bytes(v), "<f4"))
        elif num == 8:
            name = bytes(v).decode()
        elif num == 9:
            raw = bytes(v)
    if dtype != 1:  # FLOAT
        return name, None
    data = np.frombuffer(raw, "<f4") if raw is not None else np.concatenate(floats or [np.zeros(0, "<f4")])
    return name, data.reshape(dims) if dims else data


def constants(graph, out):
    """Collects every FLOAT constant of a GraphProto (node=1, initializer=5) and its subgraphs."""
    for num, _, v in fields(graph):
        if num == 5:
            name, arr = tensor(v)
            if arr is not None:
                out[name] = arr
        elif num == 1:
            outputs = []
            attrs = []
            for n2, _, v2 in fields(v):
                if n2 == 2:
                    outputs.append(bytes(v2).decode())
                elif n2 == 5:
                    attrs.append(v2)
            for a in attrs:
                aname, t, g = "", None, None
                for n3, _, v3 in fields(a):
                    if n3 == 1:
                        aname = bytes(v3).decode()
                    elif n3 == 5:
                        t = v3
                    elif n3 == 6:
                        g = v3
                if aname == "value" and t is not None and outputs:
                    _, arr = tensor(t)
                    if arr is not None:
                        out[outputs[0]] = arr
                if g is not None:
                    constants(g, out)


def extract(onnx_bytes):
    graph = None
    for num, _, v in fields(memoryview(onnx_bytes)):
        if num == 7:
            graph = v
    if graph is None:
        fail("the ONNX file has no graph")
    consts = {}
    constants(graph, consts)
    weights = {}
    for ours, suffix in NAMES.items():
        hits = [k for k in consts if k.endswith("__" + suffix) and consts[k].shape == SHAPES[ours]]
        # The 16 kHz branch is the one whose STFT has 256 taps; its constants share a prefix.
        if ours == "stft.weight":
            if len(hits) != 1:
                fail("expected one 16 kHz STFT basis, found %d" % len(hits))
            prefix = hits[0][: -len(suffix)]
        weights[ours] = hits
    out = {}
    for ours, hits in weights.items():
        chosen = [k for k in hits if k.startswith(prefix)]
        if len(chosen) != 1:
            fail("%s: expected one constant under %s, found %d" % (ours, prefix, len(chosen)))
        out[ours] = np.ascontiguousarray(consts[chosen[0]], dtype="<f4")
    return out


def write_safetensors(tensors, path):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        b = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--wheel", required=True)
    c.add_argument("--out", required=True)
    args = p.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as w:
        try:
            blob = w.read(ONNX_MEMBER)
        except KeyError:
            fail("%s has no %s" % (args.wheel, ONNX_MEMBER))
    sha = hashlib.sha256(blob).hexdigest()
    if sha != ONNX_SHA256:
        fail("silero_vad.onnx has sha256 %s, expected %s" % (sha, ONNX_SHA256))
    tensors = extract(blob)
    write_safetensors(tensors, args.out)
    print("silero: wrote %s: %d tensors" % (args.out, len(tensors)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
