#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20),
# starting from its seed corpus; exits non-zero when a target crashes
# (panic, failed invariant, timeout, out of memory) or does not build.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Debug assertions (and so overflow checks) are on.
# Works on the stable toolchain: the default sanitizer is `none`, which
# needs no unstable flag (Rust code here is `unsafe_code = "forbid"`, so the
# fuzzer looks for panics, hangs and broken invariants, not memory errors).
# FUZZ_SANITIZER=address turns AddressSanitizer on; on a stable compiler
# that needs RUSTC_BOOTSTRAP=1, which this script then sets for cargo-fuzz.
# cargo-fuzz is installed into /var/cache/rewards/cargo-fuzz when missing.
# New corpus entries go to fuzz/target/corpus/<target> (not committed);
# crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-20}"
shift || true
sanitizer="${FUZZ_SANITIZER:-none}"
root="${CARGO_FUZZ_ROOT:-/var/cache/rewards/cargo-fuzz}"
export PATH="$root/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz into $root"
    nice -n 10 cargo install cargo-fuzz --locked --root "$root"
fi

if [[ "$sanitizer" != none ]] && ! rustc --version | grep -q nightly; then
    # Sanitizers are a -Z option; let the stable compiler accept it.
    export RUSTC_BOOTSTRAP=1
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

cd fuzz
rc=0
failed=()
for target in "${targets[@]}"; do
    echo "==> fuzz $target for ${seconds}s (sanitizer $sanitizer)"
    work="target/corpus/$target"
    mkdir -p "$work" "artifacts/$target"
    # The first corpus directory receives new inputs; the seeds stay as committed.
    if ! nice -n 10 cargo fuzz run --release --debug-assertions --sanitizer "$sanitizer" "$target" \
        "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1; then
        rc=1
        failed+=("$target")
    fi
done

if ((rc != 0)); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
        "cd fuzz && cargo fuzz run --sanitizer $sanitizer TARGET artifacts/TARGET/FILE)" >&2
fi
exit "$rc"
