#!/usr/bin/env bash
# Install and start a local PostgreSQL (Debian's package) with a database for
# pman's registry tests, then print its SQLAlchemy URL on stdout.
# Idempotent: an installed package, a running cluster, an existing role or
# database are left as they are.
set -euo pipefail
log() { printf '[postgres-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
DB=${PMAN_TEST_DB:-pman_test}
USER_=${PMAN_TEST_DB_USER:-pman}
PASS=${PMAN_TEST_DB_PASSWORD:-pman}

if ! dpkg -s postgresql >/dev/null 2>&1; then
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d; made=0
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made=1; }
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends postgresql >/dev/null
  [ "$made" = 1 ] && rm -f "$policy"
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
[ -n "$ver" ] || die "no PostgreSQL server found under /usr/lib/postgresql"
pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$ver main" || pg_createcluster "$ver" main >/dev/null

online() { pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; }
if ! online; then
  # After a hard stop the pid file may name a process that is gone (or a zombie)
  pidfile=/var/lib/postgresql/$ver/main/postmaster.pid
  if [ -s "$pidfile" ]; then
    pid=$(head -1 "$pidfile")
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [ -z "$st" ] || [ "$st" = Z ]; then log "removing stale $pidfile"; rm -f "$pidfile"; fi
  fi
  log "starting PostgreSQL $ver"
  pg_ctlcluster "$ver" main start || die "PostgreSQL $ver would not start"
fi
for _ in $(seq 1 50); do runuser -u postgres -- psql -qtAc 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
psql_() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_ -c "select 1 from pg_roles where rolname='$USER_'")" != 1 ]; then
  psql_ -c "create role $USER_ login password '$PASS'"
fi
# the tests make a database of their own per session (tests/integration/conftest.py:
# postgresql_url), so runs on the same server neither drop each other's tables
# nor hold each other's tracker lock
if [ "$(psql_ -c "select rolcreatedb from pg_roles where rolname='$USER_'")" != t ]; then
  psql_ -c "alter role $USER_ createdb"
fi
if [ "$(psql_ -c "select 1 from pg_database where datname='$DB'")" != 1 ]; then
  psql_ -c "create database $DB owner $USER_"
fi
port=$(psql_ -c "show port")
log "PostgreSQL $ver answers on 127.0.0.1:$port, database $DB"
echo "postgresql+psycopg://$USER_:$PASS@127.0.0.1:$port/$DB"
