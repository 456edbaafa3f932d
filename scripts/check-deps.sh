#!/usr/bin/env bash
# Dependency gate (stage "cargo deny" of scripts/test-all.sh), without network
# beyond crates.io:
#   1. cargo deny (deny.toml): licences, bans, sources of the main workspace;
#   2. cargo deny: RustSec advisories, only when a local copy of the advisory
#      database exists (it is a git clone from GitHub, which CI cannot reach);
#   3. unused dependencies: cargo machete over every crate, and
#      [workspace.dependencies] entries that no member uses.
#
# Advisory database, first found wins:
#   - $CUSTOS_ADVISORY_DB: a clone of https://github.com/rustsec/advisory-db
#     (or a directory holding one as `cargo deny fetch db` lays it out);
#     set but not a database is an error;
#   - deny.toml's [advisories] db-path (~/.cache/custos/advisory-db), as
#     `cargo deny fetch db` fills it on a machine with GitHub access.
# None: the advisory check is skipped, saying so; the run does not fail.
# A database older than 90 days is refused by cargo-deny (and fails the run):
# refresh it with `git -C <clone> pull` or `cargo deny fetch db`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
# --offline: cargo-deny fetches neither crates nor the advisory database.
deny=(cargo deny --offline --locked)

# cargo-deny reads `cargo metadata`, which needs every crate in Cargo.lock in
# the local registry cache; a fresh machine downloads them here (crates.io).
cargo fetch --locked --offline >/dev/null 2>&1 || cargo fetch --locked

# Runs cargo-deny checks ("$@") with the duplicate-version warnings'
# inclusion graphs hidden (dozens of them, see deny.toml); on failure, again
# at error level with the graphs, to show where each offending crate comes from.
config=()
deny_check() {
  if ! "${deny[@]}" "${config[@]}" check --hide-inclusion-graph "$@"; then
    echo "==> cargo deny: failed; the errors with their inclusion graphs:" >&2
    "${deny[@]}" "${config[@]}" -L error check "$@" || true
    return 1
  fi
}

echo "==> cargo deny: licenses, bans, sources (deny.toml)"
deny_check licenses bans sources

# cargo-deny keeps each database under <db-path>/<name>-<hash of its URL>;
# this is the name for deny.toml's db-urls (https://github.com/rustsec/advisory-db).
db_name="advisory-db-3157b0e258782691"
db_path=$(sed -n 's/^db-path *= *"\(.*\)"/\1/p' deny.toml)
db_path="${db_path/#\~/$HOME}"
db=""
if [ -n "${CUSTOS_ADVISORY_DB:-}" ]; then
  if [ -d "$CUSTOS_ADVISORY_DB/crates" ]; then
    db=$(cd "$CUSTOS_ADVISORY_DB" && pwd)
  elif [ -d "$CUSTOS_ADVISORY_DB/$db_name/crates" ]; then
    db=$(cd "$CUSTOS_ADVISORY_DB/$db_name" && pwd)
  else
    echo "CUSTOS_ADVISORY_DB=$CUSTOS_ADVISORY_DB is not a RustSec advisory-db clone (no crates/ directory)" >&2
    exit 1
  fi
  # cargo-deny takes the database from db-path only: a throwaway db-path
  # (it also holds cargo-deny's lock file, so the clone may be read-only)
  # with a link to the clone, and a copy of deny.toml pointing there.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  ln -s "$db" "$tmp/$db_name"
  sed "s|^db-path *=.*|db-path = \"$tmp\"|" deny.toml >"$tmp/deny.toml"
  config=(--config "$tmp/deny.toml")
elif [ -d "$db_path/$db_name/crates" ]; then
  db="$db_path/$db_name"
fi

if [ -n "$db" ]; then
  echo "==> cargo deny: advisories (database $db, last commit $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo unknown))"
  deny_check advisories
else
  echo "==> cargo deny: advisories SKIPPED: no RustSec advisory database available offline"
  echo "    (looked for \$CUSTOS_ADVISORY_DB and $db_path/$db_name; GitHub is not reachable to fetch one)"
fi

echo "==> unused dependencies (cargo machete, [workspace.dependencies])"
cargo machete --skip-target-dir
python3 - <<'EOF'
import sys, tomllib
root = tomllib.load(open("Cargo.toml", "rb"))["workspace"]
used = set()
for member in root["members"]:
    manifest = tomllib.load(open(f"{member}/Cargo.toml", "rb"))
    tables = [manifest] + list(manifest.get("target", {}).values())
    for table in tables:
        for section in ("dependencies", "dev-dependencies", "build-dependencies"):
            for name, spec in table.get(section, {}).items():
                if isinstance(spec, dict) and spec.get("workspace"):
                    used.add(name)
unused = sorted(set(root.get("dependencies", {})) - used)
if unused:
    print("[workspace.dependencies] that no member uses (remove them from Cargo.toml):", ", ".join(unused))
    sys.exit(1)
print("every [workspace.dependencies] entry is used by a member")
EOF

echo "==> dependency checks passed in $(($(date +%s) - started))s"
