# Building projector, shared by scripts/test, scripts/demo and scripts/bench.
#
#   ensure_build_deps      installs the C toolchain and OpenSSL headers that
#                          rdkafka's bundled librdkafka build needs (Debian),
#                          and the openssl command a unit test makes its RSA
#                          key with (the test fails without it, never skips)
#   cargo_build ARGS...    cargo build --locked ARGS, retried once
#   ensure_cargo_deny      installs cargo-deny when it is missing
#   ensure_advisory_db     clones the RustSec advisory bundle where deny.toml
#                          reads it, and exports PROJECTOR_ADVISORY_DB

ensure_build_deps() {
    if ! dpkg -s libssl-dev >/dev/null 2>&1 || ! command -v make >/dev/null || ! command -v openssl >/dev/null; then
        apt-get update -qq && apt-get install -y -qq libssl-dev make gcc g++ pkg-config openssl
    fi
}

# A CI run once failed inside librdkafka's bundled make build ("opening
# dependency file rdkafka_sasl.d: No such file or directory"), and the same
# commit built cleanly on the next try. So a failed build is retried once,
# after removing rdkafka-sys's build output; a real compile error fails
# twice and stops the script.
cargo_build() {
    if cargo build --locked "$@"; then
        return 0
    fi
    printf '[build] cargo build %s failed; removing rdkafka-sys build output and retrying once\n' "$*" >&2
    cargo clean -p rdkafka-sys >/dev/null 2>&1 || true
    cargo clean --release -p rdkafka-sys >/dev/null 2>&1 || true
    cargo build --locked "$@"
}

# cargo-deny is built from source, once per machine: 6.5 CPU-minutes (33
# minutes of wall time on a loaded 2-core machine). cargo keeps it in
# ~/.cargo/bin, so later runs skip this.
# The version is pinned: ensure_advisory_db's directory name and deny.toml's
# keys follow it.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
    if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
        printf '[build] installing cargo-deny %s (cargo install --locked, minutes, once)\n' "$CARGO_DENY_VERSION" >&2
        cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
    fi
}

# The RustSec advisory database cannot be fetched here (nor in CI), so it
# comes from a git bundle beside the repo: ../shared/data/rustsec-advisory-db-*.bundle
# (the newest, by its date in the name), or PROJECTOR_ADVISORY_BUNDLE. It is
# cloned into the sub-directory cargo-deny derives from deny.toml's db-urls
# entry, under $PROJECTOR_ADVISORY_DB (default /var/tmp/projector-advisory-db),
# and re-cloned when the bundle's head changes. Run from the repo root.
ensure_advisory_db() {
    local bundle=${PROJECTOR_ADVISORY_BUNDLE:-}
    if [ -z "$bundle" ]; then
        local b
        # Globs expand sorted, so the last is the newest date.
        for b in ../shared/data/rustsec-advisory-db-*.bundle; do
            if [ -f "$b" ]; then bundle=$b; fi
        done
    fi
    if [ -z "$bundle" ] || [ ! -f "$bundle" ]; then
        printf '[build] no RustSec advisory bundle at ../shared/data/rustsec-advisory-db-*.bundle (from %s); put the shared folder beside the repo, or set PROJECTOR_ADVISORY_BUNDLE\n' "$PWD" >&2
        return 1
    fi
    export PROJECTOR_ADVISORY_DB=${PROJECTOR_ADVISORY_DB:-/var/tmp/projector-advisory-db}
    # cargo-deny's directory name for https://github.com/rustsec/advisory-db
    # (cargo-deny $CARGO_DENY_VERSION); `cargo deny check` names the path if this drifts.
    local dir=$PROJECTOR_ADVISORY_DB/advisory-db-3157b0e258782691
    local head
    head=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" || $2 == "refs/heads/main" { print $1; exit }')
    if [ "$(git -C "$dir" rev-parse HEAD 2>/dev/null)" != "$head" ]; then
        rm -rf "$dir"
        mkdir -p "$PROJECTOR_ADVISORY_DB"
        git clone -q "$bundle" "$dir"
    fi
}
