# Building projector, shared by scripts/test, scripts/demo and scripts/bench.
#
#   ensure_build_deps      installs the C toolchain and OpenSSL headers that
#                          rdkafka's bundled librdkafka build needs (Debian),
#                          and the openssl command a unit test makes its RSA
#                          key with (the test fails without it, never skips)
#   cargo_build ARGS...    cargo build --locked ARGS, retried once

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
