#!/usr/bin/env bash
# Checks the daemons' systemd units in deploy/systemd against the binaries
# just built: `systemd-analyze verify` (syntax, directives, the executable),
# and `systemd-analyze security --offline` must rate each unit's exposure at
# most CUSTOS_UNIT_MAX_EXPOSURE (default 2.0, systemd's "OK" band). Without
# systemd-analyze it says so loudly and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-$HOME/.cache/custos/target}/debug"
max="${CUSTOS_UNIT_MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "!!! systemd-analyze is not installed: deploy/systemd was NOT checked" >&2
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for unit in deploy/systemd/*.service; do
  # The units name the installed binaries; check them against the built ones.
  sed "s|/usr/local/bin/|$bin/|" "$unit" >"$work/$(basename "$unit")"
done
systemd-analyze verify --man=no "$work"/*.service
for unit in "$work"/*.service; do
  name="$(basename "$unit")"
  score="$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1 |
    sed -n "s/.*Overall exposure level for $name: \([0-9.]*\).*/\1/p")"
  if [ -z "$score" ]; then
    echo "$name: no exposure score from systemd-analyze security" >&2
    exit 1
  fi
  if ! awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
    echo "$name: exposure $score is above $max" >&2
    exit 1
  fi
  echo "$name: verified, exposure $score (at most $max)"
done
