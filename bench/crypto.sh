#!/usr/bin/env bash
# Crypto throughput of latchkey beside `openssl speed` on the same machine, in the same run, so
# the ratio survives a noisy shared host. One core each (criterion and openssl run single-threaded).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== openssl speed (reference)"
openssl speed -seconds 3 ecdsap256 rsa2048 ed25519 2>/dev/null | grep -E "^rsa 2048|nistp256|Ed25519"
echo "== latchkey-verify: verification"
cargo bench -q -p latchkey-verify --bench verify 2>/dev/null | grep -E "^verify/|time:"
echo "== latchkey: signing and refresh-token crypto"
cargo bench -q -p latchkey --bench issuer 2>/dev/null | grep -E "^(sign/|refresh)|time:"
