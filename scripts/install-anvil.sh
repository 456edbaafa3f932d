#!/usr/bin/env bash
# Installs anvil (Foundry's local EVM node) from the npm registry into a
# project-local directory, only if it is missing, and prints the binary path.
# Tests find it via $CUSTOS_ANVIL or at the path printed here.
# Usage: scripts/install-anvil.sh            (idempotent)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools"
pkg="@foundry-rs/anvil-linux-amd64"
version="${CUSTOS_ANVIL_VERSION:-1.7.1}"
bin="$prefix/node_modules/$pkg/bin/anvil"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "install-anvil: npm is required (apt-get install npm)" >&2; exit 1; }
  echo "==> installing $pkg@$version into $prefix" >&2
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --no-save --prefix "$prefix" "$pkg@$version" >&2
  chmod +x "$bin"
fi
"$bin" --version >/dev/null || { echo "install-anvil: $bin does not run" >&2; exit 1; }
echo "$bin"
