#!/usr/bin/env bash
# The main job: build, start a local 2-of-3 cluster on loopback (coordinator +
# 3 signer processes, generated TLS certs, libp2p keys and configs in
# .custos-dev/), then create a key, sign digests and verify them.
# The first run generates safe primes and aux info (a few minutes on 2 cores);
# later runs reuse them. Stop the cluster with `./target/release/custos dev down`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --workspace --bins
# What the withdrawal policy (examples/policy.toml) decides for a 5 ETH payout:
# the rule, the approval quorum and the time lock, explained in plain words.
./target/release/custos policy explain examples/policy.toml \
    --withdrawal examples/withdrawal-large.json --at 2026-01-07T10:00:00Z
./target/release/custos dev up
./target/release/custos demo "$@"
