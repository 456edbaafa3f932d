#!/usr/bin/env bash
# Installs what the tests need (idempotently), then runs the format, lint and
# test gates. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/ensure-services.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests spawn the daemons: build every binary first.
echo "==> cargo build --bins"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${CUSTOS_TEST_THREADS:-2}"
