#!/usr/bin/env bash
# Starts (or reuses) the services the tests talk to, idempotently:
#   PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`)
#   NATS with JetStream on 127.0.0.1:4222
# Override with CUSTOS_TEST_PG_URL / CUSTOS_TEST_NATS_URL to use others.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

# --- PostgreSQL -------------------------------------------------------------
if [ -z "${CUSTOS_TEST_PG_URL:-}" ]; then
  if ! port_open 5432; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    $SUDO service postgresql start >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do port_open 5432 && break; sleep 0.5; done
  fi
  if ! port_open 5432; then
    # No system cluster came up: run our own, trust auth, as the postgres user
    # (initdb refuses root).
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    datadir=/var/tmp/custos-pg
    if [ ! -s "$datadir/PG_VERSION" ]; then
      $SUDO install -d -o postgres -g postgres "$datadir"
      $SUDO -u postgres "$bindir/initdb" -D "$datadir" -A trust -U postgres >/dev/null
    fi
    $SUDO -u postgres "$bindir/pg_ctl" -D "$datadir" -l "$datadir/log" \
      -o "-c listen_addresses=127.0.0.1 -p 5432 -k /tmp" start >/dev/null
    for _ in $(seq 1 40); do port_open 5432 && break; sleep 0.5; done
  fi
  port_open 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
  command -v psql >/dev/null || apt_install postgresql-client
  if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
  fi
  echo "==> PostgreSQL ready on 127.0.0.1:5432"
fi

# --- NATS JetStream -----------------------------------------------------------
if [ -z "${CUSTOS_TEST_NATS_URL:-}" ]; then
  if ! port_open 4222; then
    command -v nats-server >/dev/null || apt_install nats-server
    mkdir -p /var/tmp/custos-nats
    setsid nohup nats-server -js -a 127.0.0.1 -p 4222 -sd /var/tmp/custos-nats \
      >/var/tmp/custos-nats/log 2>&1 < /dev/null &
    for _ in $(seq 1 40); do port_open 4222 && break; sleep 0.25; done
  fi
  port_open 4222 || { echo "NATS did not start on 127.0.0.1:4222" >&2; exit 1; }
  echo "==> NATS ready on 127.0.0.1:4222"
fi
