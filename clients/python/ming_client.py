#!/usr/bin/env python3
"""A MingLLM bus client in Python, written from docs/wire-protocol.md alone.

It proves the protocol document is enough to talk to the bus from another language.
Needs pyzmq and msgpack (Debian: python3-zmq, python3-msgpack; `just setup` installs them).

    ming_client.py [--runtime-dir DIR] ping SERVICE
    ming_client.py [--runtime-dir DIR] request SERVICE KIND [JSON_BODY]

Prints the final reply body as JSON. Exit status: 0 reply, 1 error reply (its code is printed),
2 deadline passed with no final answer, 64 bad usage.
"""

import argparse
import json
import os
import random
import sys
import time

import msgpack
import zmq

PROTOCOL = {"major": 1, "minor": 0}


def default_runtime_dir():
    if os.environ.get("MING_PATHS__RUNTIME_DIR"):
        return os.environ["MING_PATHS__RUNTIME_DIR"]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "mingllm") if xdg else "/tmp/mingllm-%d" % os.getuid()


def now_ms():
    return int(time.time() * 1000)


def new_id():
    return random.getrandbits(64) or 1


def envelope(target, kind, body, timeout_ms):
    """A request envelope: a msgpack map with named fields; the body is msgpack inside a bin."""
    mid = new_id()
    return {
        "version": PROTOCOL,
        "id": mid,
        "trace": mid,
        "sender": "python-client",
        "target": target,
        "deadline_ms": now_ms() + timeout_ms,
        "flow": "request",
        "kind": kind,
        "body": msgpack.packb(body, use_bin_type=True),
    }


def to_jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def request(runtime_dir, target, kind, body, timeout_ms=3000):
    """Sends one request through the broker; returns (flow, body) of the final frame, or None
    when the deadline passes. Partial frames are collected and returned with the final one."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("ipc://" + os.path.join(runtime_dir, "bus.sock"))
    env = envelope(target, kind, body, timeout_ms)
    sock.send(msgpack.packb(env, use_bin_type=True))
    partials = []
    try:
        while True:
            left = env["deadline_ms"] - now_ms()
            if left <= 0 or not sock.poll(left, zmq.POLLIN):
                return None
            frames = sock.recv_multipart()
            reply = msgpack.unpackb(frames[-1], raw=False)
            if reply.get("version", {}).get("major") != PROTOCOL["major"]:
                raise RuntimeError("peer speaks protocol %r" % reply.get("version"))
            if reply.get("correlation") != env["id"]:
                continue  # not ours (or an uncorrelated error for someone else's frame)
            payload = msgpack.unpackb(reply["body"], raw=False) if reply["body"] else {}
            if reply["flow"] == "partial":
                partials.append(payload)
                continue
            if reply["flow"] in ("reply", "error"):
                return reply["flow"], payload, partials
    finally:
        sock.close()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime-dir", default=default_runtime_dir())
    p.add_argument("--timeout-ms", type=int, default=3000)
    sub = p.add_subparsers(dest="cmd", required=True)
    ping = sub.add_parser("ping")
    ping.add_argument("service")
    req = sub.add_parser("request")
    req.add_argument("service")
    req.add_argument("kind")
    req.add_argument("body", nargs="?", default="{}")
    args = p.parse_args(argv)
    if args.cmd == "ping":
        target, kind, body = args.service, "control.ping", {}
    else:
        target, kind = args.service, args.kind
        try:
            body = json.loads(args.body)
        except ValueError as e:
            print("bad JSON body: %s" % e, file=sys.stderr)
            return 64
    started = time.monotonic()
    result = request(args.runtime_dir, target, kind, body, args.timeout_ms)
    if result is None:
        print("Timeout: no answer from %s within %d ms" % (target, args.timeout_ms), file=sys.stderr)
        return 2
    flow, payload, partials = result
    if flow == "error":
        print("%s: %s" % (payload.get("code"), payload.get("message")))
        return 1
    out = {"reply": to_jsonable(payload), "ms": round((time.monotonic() - started) * 1000, 3)}
    if partials:
        out["partials"] = to_jsonable(partials)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
