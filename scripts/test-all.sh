#!/usr/bin/env bash
# Installs what the tests need (idempotently), then runs the format, lint and
# test gates, and prints a timing table (each stage, the 15 slowest tests).
# `.ci/run` calls exactly this.
#
# The build goes to a target directory outside the clone
# ($HOME/.cache/custos/target unless CARGO_TARGET_DIR says otherwise), so a
# local run and CI's run on the same machine share it; an empty one works too
# (a cold run compiles everything once).
#
# Knobs: CUSTOS_FUZZ_SECS (seconds per fuzz target, default 20; 0 skips the
# fuzz smoke run), CUSTOS_NEXTEST_ARGS (extra arguments to cargo nextest run,
# e.g. a filter).
set -euo pipefail
cd "$(dirname "$0")/.."

# The daemons the tests start read CUSTOS_* variables as config overrides,
# so this script's own knobs are taken here and kept from them.
fuzz_secs="${CUSTOS_FUZZ_SECS:-20}"
nextest_args="${CUSTOS_NEXTEST_ARGS:-}"
unset CUSTOS_FUZZ_SECS CUSTOS_NEXTEST_ARGS

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/custos/target}"
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

timings=()
run_started=$(date +%s)
stage_started=$run_started
current=""
stage() {
  local now
  now=$(date +%s)
  if [ -n "$current" ]; then
    timings+=("$(printf '%-28s %6ss' "$current" $((now - stage_started)))")
  fi
  current="$1"
  stage_started=$now
  [ -n "$current" ] && echo "==> $current"
  return 0
}

# nextest keeps its store (and the JUnit report) under the workspace.
junit="$PWD/target/nextest/ci/junit.xml"
report() {
  local rc=$?
  stage ""
  echo
  echo "==> timing (exit $rc)"
  printf '%s\n' "${timings[@]}"
  printf '%-28s %6ss\n' "total" $(($(date +%s) - run_started))
  if [ -f "$junit" ]; then
    echo
    echo "==> 15 slowest tests (from $junit)"
    python3 - "$junit" <<'EOF' || true
import sys, xml.etree.ElementTree as ET
cases = []
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    cases.append((float(tc.get("time", 0)), tc.get("classname", ""), tc.get("name", "")))
cases.sort(reverse=True)
for t, cls, name in cases[:15]:
    print(f"{t:8.1f}s  {cls} {name}")
print(f"{len(cases)} tests, {sum(c[0] for c in cases):.0f} s of test time")
EOF
  fi
}
trap report EXIT

stage "install"
./scripts/install-deps.sh
stage "services"
./scripts/ensure-services.sh

stage "fmt"
cargo fmt --all -- --check
(cd fuzz && cargo fmt --all -- --check)

stage "terraform"
./scripts/check-terraform.sh

stage "deploy files"
./scripts/check-deploy.sh

stage "hd vectors"
# 1,000 HD-derived keys and addresses derived again by Python bip_utils,
# compared with the vectors chains/tests/hd_vectors.rs checks the Rust side
# against (the venv comes from scripts/install-deps.sh).
"${CUSTOS_HD_VENV:-$HOME/.cache/custos/hd-venv}/bin/python" \
  chains/tests/vectors/make_hd_vectors.py --check chains/tests/vectors/hd_derivation.json

stage "cargo deny"
./scripts/check-deps.sh

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build for the tests and the daemons they spawn: nextest builds every
# test binary and the workspace's binaries with the same features.
stage "build"
cargo nextest run --workspace --locked --no-run
cargo build --workspace --bins --tests --locked

stage "systemd units"
./scripts/check-systemd.sh

stage "tests"
rm -f "$junit"
# shellcheck disable=SC2086
cargo nextest run --workspace --locked --profile ci --no-fail-fast $nextest_args

stage "doctests"
cargo test --workspace --locked --doc

if [ "$fuzz_secs" -gt 0 ]; then
  stage "fuzz smoke (${fuzz_secs}s each, two at a time)"
  # A libFuzzer run is one process on one core: two at a time use both cores
  # (their builds share the fuzz target directory, one after the other).
  running=()
  finish_fuzz() {
    local entry pid target log
    for entry in "${running[@]}"; do
      pid="${entry%%:*}"
      target="${entry#*:}"
      log="$CARGO_TARGET_DIR/fuzz-$target.log"
      if ! wait "$pid"; then
        tail -n 60 "$log"
        echo "fuzz target $target failed (log: $log)" >&2
        exit 1
      fi
      echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    done
    running=()
  }
  for target in policy_parse statement_decode evaluate_withdrawal evm_unsigned_tx utxo_psbt_check; do
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" ./fuzz/run-stable.sh "$target" "$fuzz_secs" \
      >"$CARGO_TARGET_DIR/fuzz-$target.log" 2>&1 &
    running+=("$!:$target")
    [ "${#running[@]}" -lt 2 ] || finish_fuzz
  done
  finish_fuzz
fi
stage ""
