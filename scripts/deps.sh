#!/usr/bin/env bash
# Install what the build and the tests need:
#  - Debian packages (bundled librdkafka via cmake, OpenSSL, SASL, zlib, curl);
#    apt is not touched at all when every package is already installed;
#  - cargo-nextest (the test runner of scripts/test.sh), built with
#    `cargo install --locked` only when `cargo nextest` is missing.
# Idempotent and instant on a prepared machine.
set -euo pipefail

PACKAGES=(cmake libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev pkg-config build-essential)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps: all ${#PACKAGES[@]} Debian packages already installed, apt skipped"
else
    echo "deps: installing missing Debian packages: ${missing[*]}"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
    echo "deps: installed ${missing[*]}"
fi

if cargo nextest --version >/dev/null 2>&1; then
    echo "deps: $(cargo nextest --version 2>/dev/null | head -n1) already installed"
else
    echo "deps: installing cargo-nextest (cargo install --locked, a few minutes on 2 cores)"
    t0=$SECONDS
    nice -n "${NEXTEST_NICE:-10}" cargo install cargo-nextest --locked
    echo "deps: cargo-nextest installed in $((SECONDS - t0))s"
fi
