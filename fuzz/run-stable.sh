#!/usr/bin/env bash
# Coverage-guided libFuzzer on the stable toolchain (no cargo-fuzz, no nightly):
# the sanitizer-coverage instrumentation cargo-fuzz adds, passed by hand.
# Usage: fuzz/run-stable.sh policy_parse|statement_decode|evaluate_withdrawal|evm_unsigned_tx|utxo_psbt_check [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?target}"
secs="${2:-60}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --target "$host" --bin "$target"
mkdir -p "corpus/$target"
seeds=()
[ -d "seeds/$target" ] && seeds=("seeds/$target")
"$CARGO_TARGET_DIR/$host/release/$target" -max_total_time="$secs" -max_len=65536 "corpus/$target" "${seeds[@]}"
