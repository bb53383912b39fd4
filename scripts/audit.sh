#!/usr/bin/env bash
# Dependency audit with cargo-deny (deny.toml): licenses, bans (duplicate
# majors warn, wildcards warn) and sources (crates.io only). These work
# offline. The advisory check needs the RustSec database from GitHub:
#
#   scripts/audit.sh                  # licenses, bans, sources
#   scripts/audit.sh --advisories     # also advisories (needs github.com)
#
# cargo-deny is installed into /var/cache/rewards/cargo-deny when missing
# (about 6 CPU-minutes). Not part of CI: see docs/security.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

root="${CARGO_DENY_ROOT:-/var/cache/rewards/cargo-deny}"
export PATH="$root/bin:$PATH"
if ! cargo deny --version >/dev/null 2>&1; then
    echo "==> installing cargo-deny into $root"
    nice -n 10 cargo install cargo-deny --locked --root "$root"
fi

checks=(licenses bans sources)
if [[ "${1:-}" == --advisories ]]; then
    checks+=(advisories)
fi
echo "==> cargo deny check ${checks[*]}"
exec cargo deny check "${checks[@]}"
