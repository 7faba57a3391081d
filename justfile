# MingLLM tasks. `./just` (the script next to this file) installs `just` itself when missing.
# The build shares one target dir outside the clone, so reruns are incremental.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TARGET_DIR := env("CARGO_TARGET_DIR", if `id -u` == "0" { "/var/cache/mingllm/target" } else { env("HOME") / ".cache/mingllm/target" })
export CARGO_TERM_COLOR := "never"

# Debian packages the build, the services and the tests need.
apt_packages := "build-essential pkg-config cmake clang libclang-dev libasound2-dev espeak-ng sox tzdata python3 python3-pip python3-venv python3-zmq python3-msgpack python3-numpy git ca-certificates curl"

# List the recipes.
default:
    @just --list

# Install the missing Debian packages (idempotent; sudo when not root).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for p in {{apt_packages}}; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then echo "setup: every Debian package is present"; exit 0; fi
    echo "setup: installing ${missing[*]}"
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}"

# Fetch, assemble and verify the models (models/manifest.toml); a quick no-op when all are in place.
models: setup
    /usr/bin/python3 models/fetch.py

# whisper.cpp built before `.cargo/config.toml` asked for llamafile's tiled matrix products
# (GGML_LLAMAFILE) stays that way in a cached target dir: cargo does not rerun a build script
# for a new [env] value. Such a build is cleaned once, so the next one has them.
_whisper-cache:
    #!/usr/bin/env bash
    set -euo pipefail
    for f in "$CARGO_TARGET_DIR"/*/build/whisper-rs-sys-*/out/build/CMakeCache.txt; do
      [ -f "$f" ] && grep -q '^GGML_LLAMAFILE:BOOL=OFF' "$f" || continue
      dir="${f#"$CARGO_TARGET_DIR"/}"; dir="${dir%%/*}"
      profile="$dir"; [ "$dir" = debug ] && profile=dev
      echo "whisper.cpp in $CARGO_TARGET_DIR/$dir was built without GGML_LLAMAFILE: building it again"
      cargo clean -p whisper-rs-sys --profile "$profile"
    done

# Build every binary (debug).
build: _whisper-cache
    cargo build --workspace --bins --locked

# Set up, build (release), start the supervisor in the background unless it runs already, then
# open `ming chat` (on a terminal). `just down` stops it; `just serve` runs it in the foreground.
up *ARGS: setup models _whisper-cache
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --workspace --bins --locked
    bin="$CARGO_TARGET_DIR/release"
    answering() { "$bin/ming" status --timeout-ms 1000 >/dev/null 2>&1; [ $? -ne 1 ]; }
    if ! answering; then
      logdir="${XDG_STATE_HOME:-$HOME/.local/state}/mingllm"
      mkdir -p "$logdir"
      nohup "$bin/mingd" {{ARGS}} >>"$logdir/mingd.log" 2>&1 &
      echo "mingd started (pid $!; its log: $logdir/mingd.log)"
      for _ in $(seq 1 150); do answering && break; sleep 0.2; done
    fi
    "$bin/ming" status || true
    if [ -t 0 ]; then
      exec "$bin/ming" chat
    else
      echo "MingLLM is running. Talk to it: ./just ming chat   Stop it: ./just down"
    fi

# Stop the supervisor started by `just up` (every service drains first).
down:
    #!/usr/bin/env bash
    set -euo pipefail
    bin="$CARGO_TARGET_DIR/release"
    pid=$("$bin/ming" status 2>/dev/null | awk 'NR==1 && $1=="mingd" {print $3}') || true
    if [ -z "${pid:-}" ]; then echo "mingd is not running"; exit 0; fi
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    echo "mingd (pid $pid) stopped"

# Run the supervisor in the foreground (Ctrl-C drains and stops everything).
[positional-arguments]
serve *ARGS: setup models
    cargo build --release --workspace --bins --locked
    exec "$CARGO_TARGET_DIR/release/mingd" "$@"

# Run the ming CLI (release build), e.g. `just ming status`, `just ming logs agent -f`.
[positional-arguments]
ming *ARGS:
    @cargo build --release --locked -q -p ming-supervisor --bin ming
    @"$CARGO_TARGET_DIR/release/ming" "$@"

# Everything CI checks: format, lints, then every test (real processes, real sockets).
test: setup models _whisper-cache
    #!/usr/bin/env bash
    set -euo pipefail
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    # The cross-process tests run the workspace's binaries: build them first.
    cargo build --workspace --bins --locked
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    cargo test --workspace --locked -- --test-threads 2 2>&1 | tee "$log"
    if [ -n "${QDRANT_URL:-}" ]; then
      echo "test: QDRANT_URL is set: the memory contract runs against $QDRANT_URL too"
      cargo test --locked -p ming-memory --test contract -- --ignored 2>&1 | tee -a "$log"
    else
      echo "test: QDRANT_URL is not set: the memory contract's Qdrant-server runs are skipped (shown as ignored)"
    fi
    awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"

# Benchmarks (release build): bus latency against raw ZeroMQ, throughput, streaming; the
# inference service against llama.cpp driven directly, cached vs cold time to first token;
# redaction throughput and the cloud-gateway's overhead over a direct request; the agent's
# typed fast path; memory recall; voice in (end of speech → final transcript, cut-offs, RTF);
# the personal router (training time for 1k/10k examples, inference latency, held-out accuracy);
# voice to first action through the whole system, typed too, without and with the router.
bench: models _whisper-cache
    cargo bench --locked -p ming-bus --bench bus
    cargo bench --locked -p ming-inference --bench inference
    cargo bench --locked -p ming-cloud-gateway --bench redact
    cargo bench --locked -p ming-cloud-gateway --bench gateway
    cargo bench --locked -p ming-agent --bench typed
    cargo bench --locked -p ming-memory --bench memory
    cargo bench --locked -p ming-audio --bench latency
    cargo bench --locked -p ming-training --bench router
    # Voice to first action runs the whole system: release binaries first.
    cargo build --release --locked --workspace --bins
    cargo bench --locked -p ming-tests --bench voice

# Lints, as CI runs them.
lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
