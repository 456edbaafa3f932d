#!/usr/bin/env bash
# The main job: build, start a local 2-of-3 cluster on loopback (coordinator +
# 3 signer processes, generated TLS certs, libp2p keys and configs in
# .custos-dev/), then create a key, sign digests and verify them.
# The first run generates safe primes and aux info (a few minutes on 2 cores);
# later runs reuse them. Stop the cluster with `./target/release/custos dev down`.
#
# On a chain: `scripts/demo.sh --eth` (or CUSTOS_DEMO_ETH=1) starts anvil from
# .tools (installed by scripts/install-anvil.sh if missing) on 127.0.0.1:8545
# (CUSTOS_DEMO_ANVIL_PORT; a node already listening there is used as is), starts
# the cluster with it (`custos dev up --eth-rpc URL`) and runs `custos demo
# --eth-rpc URL`: a 1.5 ETH withdrawal through policy and approvals, broadcast
# and confirmed. anvil keeps running (its chain saved in .tools/anvil-demo/)
# alongside the cluster. Other arguments go to `custos demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
eth="${CUSTOS_DEMO_ETH:-}"
if [ "${1:-}" = "--eth" ]; then
  eth=1
  shift
fi
./scripts/install-deps.sh
# A dev cluster: its configs keep the raw-digest paths ([dev]), which release
# daemons refuse unless built with their `dev` feature.
cargo build --release --workspace --bins --features custos-signer-node/dev,custos-coordinator/dev,custos-cli/dev
custos=./target/release/custos
if [ -z "$eth" ]; then
  # What the withdrawal policy (examples/policy.toml) decides for a 5 ETH payout:
  # the rule, the approval quorum and the time lock, explained in plain words.
  $custos policy explain examples/policy.toml \
      --withdrawal examples/withdrawal-large.json --at 2026-01-07T10:00:00Z
  $custos dev up
  $custos demo "$@"
  exit 0
fi

anvil="$(./scripts/install-anvil.sh)"
port="${CUSTOS_DEMO_ANVIL_PORT:-8545}"
url="http://127.0.0.1:$port"
state=.tools/anvil-demo
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
if listening; then
  echo "==> using the node already listening on $url" >&2
else
  mkdir -p "$state"
  echo "==> starting anvil on $url (log $state/anvil.log)" >&2
  # The chain is saved every second and reloaded on the next start, so the
  # cluster's wallet nonces stay in step with it across restarts.
  nohup "$anvil" --host 127.0.0.1 --port "$port" --state "$state/state.json" \
      --state-interval 1 >"$state/anvil.log" 2>&1 &
  echo $! >"$state/anvil.pid"
  for _ in $(seq 100); do
    listening && break
    sleep 0.1
  done
  listening || { echo "anvil did not start: see $state/anvil.log" >&2; exit 1; }
fi
$custos dev up --eth-rpc "$url"
$custos demo --eth-rpc "$url" "$@"
if [ -f "$state/anvil.pid" ]; then
  echo "stop with: $custos dev down && kill \$(cat $state/anvil.pid)" >&2
fi
