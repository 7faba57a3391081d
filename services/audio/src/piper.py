"""Piper text-to-speech for MingLLM's audio service (run by it as a separate process).

usage: python3 -c <this file> MODEL.onnx MODEL.onnx.json LENGTH_SCALE < text > speech.wav
       python3 -c <this file> MODEL.onnx MODEL.onnx.json --serve

The text is turned into phonemes by espeak-ng (`--ipa`, the voice the model was trained with),
the phonemes into the model's ids (each followed by the pad id, between the start and end ids,
as Piper does), and the VITS network (ONNX Runtime, CPU) into 16-bit mono WAV at the model's
rate, written to stdout. Errors go to stderr with a non-zero exit.

`--serve` loads the network once (most of a short reply's time) and answers requests until
stdin ends: each a line of JSON {"text": ..., "length_scale": ...}, each answer b"OK" or b"ER",
a 4-byte big-endian length, then the WAV or the error's message (UTF-8).
"""
import io
import json
import subprocess
import sys
import unicodedata
import wave


def fail(msg):
    sys.stderr.write("piper: " + msg + "\n")
    sys.exit(1)


class Voice:
    def __init__(self, model, config):
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError as e:
            fail(f"{e} (ONNX Runtime is installed by `just models`)")
        self.np = np
        with open(config, encoding="utf-8") as f:
            self.cfg = json.load(f)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    def ids(self, text):
        ids_of = self.cfg["phoneme_id_map"]
        ipa = subprocess.run(
            ["espeak-ng", "-q", "--ipa", "-v", self.cfg["espeak"]["voice"]],
            input=text, capture_output=True, text=True, check=False)
        if ipa.returncode != 0:
            raise ValueError("espeak-ng: " + ipa.stderr.strip())
        lines = [line.strip() for line in ipa.stdout.splitlines() if line.strip()]
        if not lines:
            raise ValueError("espeak-ng gave no phonemes")
        pad = ids_of["_"][0]
        ids = [ids_of["^"][0], pad]
        end = text[-1] if text[-1] in ".?!" else "."
        for i, line in enumerate(lines):
            for ch in unicodedata.normalize("NFD", line):
                if ch in ids_of:
                    ids += [ids_of[ch][0], pad]
            stop = end if i == len(lines) - 1 else "."
            ids += [ids_of[stop][0], pad, ids_of[" "][0], pad]
        ids.append(ids_of["$"][0])
        return ids

    def wav(self, text, length_scale):
        np = self.np
        text = text.strip()
        if not text:
            raise ValueError("no text")
        ids = self.ids(text)
        inf = self.cfg["inference"]
        audio = self.session.run(None, {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([inf["noise_scale"], length_scale * inf["length_scale"],
                                inf["noise_w"]], dtype=np.float32),
        })[0].reshape(-1)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        pcm = (np.clip(audio / max(peak, 0.01), -1.0, 1.0) * 0.9 * 32767).astype("<i2")
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(self.cfg["audio"]["sample_rate"]))
            w.writeframes(pcm.tobytes())
        return out.getvalue()


def serve(voice):
    out = sys.stdout.buffer
    for line in sys.stdin:
        try:
            req = json.loads(line)
            answer = b"OK", voice.wav(str(req["text"]), float(req.get("length_scale", 1.0)))
        except Exception as e:  # one bad request is answered, not fatal
            answer = b"ER", str(e).encode("utf-8", "replace")
        out.write(answer[0] + len(answer[1]).to_bytes(4, "big") + answer[1])
        out.flush()


def main(argv):
    if len(argv) != 3:
        fail("expected MODEL CONFIG LENGTH_SCALE|--serve")
    voice = Voice(argv[0], argv[1])
    if argv[2] == "--serve":
        serve(voice)
        return
    try:
        sys.stdout.buffer.write(voice.wav(sys.stdin.read(), float(argv[2])))
    except ValueError as e:
        fail(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
