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
# alongside the cluster.
#
# In LTC: `scripts/demo.sh --ltc` (or CUSTOS_DEMO_LTC=1) starts Litecoin Core
# (`litecoind -regtest`, from apt) on 127.0.0.1:19443 (CUSTOS_DEMO_LTC_PORT; a
# node already listening there is used as is, with user custos and password
# regtest-only), its chain in .tools/litecoin-demo/, starts the cluster with it
# (`custos dev up --ltc-rpc URL`) and runs `custos demo --ltc-rpc URL`: a 1.5 LTC
# withdrawal through policy and approvals, each input signed in its own
# session, broadcast, mined and confirmed.
#
# Other arguments go to `custos demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
eth="${CUSTOS_DEMO_ETH:-}"
ltc="${CUSTOS_DEMO_LTC:-}"
case "${1:-}" in
  --eth) eth=1; shift ;;
  --ltc) ltc=1; shift ;;
esac
./scripts/install-deps.sh
# A dev cluster: its configs keep the raw-digest paths ([dev]), which release
# daemons refuse unless built with their `dev` feature.
cargo build --release --workspace --bins --features custos-signer-node/dev,custos-coordinator/dev,custos-cli/dev
custos=./target/release/custos

# `run_node NAME PORT STATE_DIR COMMAND...`: uses the node already listening on
# 127.0.0.1:PORT, else starts COMMAND in the background (log and pid file in
# STATE_DIR) and waits up to 30 s for the port.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
run_node() {
  local name="$1" port="$2" state="$3"
  shift 3
  if listening "$port"; then
    echo "==> using the node already listening on 127.0.0.1:$port" >&2
    return 0
  fi
  mkdir -p "$state"
  echo "==> starting $name on 127.0.0.1:$port (log $state/$name.log)" >&2
  nohup "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  for _ in $(seq 300); do
    listening "$port" && return 0
    sleep 0.1
  done
  echo "$name did not start: see $state/$name.log" >&2
  exit 1
}
# After the demo: how to stop what it started.
stop_hint() {
  local pid_file="$1"
  if [ -f "$pid_file" ]; then
    echo "stop with: $custos dev down && kill \$(cat $pid_file)" >&2
  fi
}

if [ -n "$ltc" ]; then
  port="${CUSTOS_DEMO_LTC_PORT:-19443}"
  # A throwaway regtest node's credentials: they end up in the cluster's files.
  url="http://custos:regtest-only@127.0.0.1:$port/"
  state=.tools/litecoin-demo
  run_node litecoind "$port" "$state" litecoind -regtest -datadir="$PWD/$state" \
      -rpcport="$port" -listen=0 -server=1 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
      -rpcuser=custos -rpcpassword=regtest-only -fallbackfee=0.0002 \
      -mempoolreplacement=1 -printtoconsole=0
  $custos dev up --ltc-rpc "$url"
  $custos demo --ltc-rpc "$url" "$@"
  stop_hint "$state/litecoind.pid"
  exit 0
fi
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
# The chain is saved every second and reloaded on the next start, so the
# cluster's wallet nonces stay in step with it across restarts.
run_node anvil "$port" "$state" "$anvil" --host 127.0.0.1 --port "$port" \
    --state "$state/state.json" --state-interval 1
$custos dev up --eth-rpc "$url"
$custos demo --eth-rpc "$url" "$@"
stop_hint "$state/anvil.pid"
