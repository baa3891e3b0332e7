#!/usr/bin/env bash
# pman's two entry points on a fresh Debian 12 machine (root, Python 3.11):
#
#   bash scripts/dev.sh run    set up a virtualenv (and Debian's bubblewrap, the
#                              local backend's sandbox) and serve pman on
#                              127.0.0.1:5010 with the local backend and
#                              STOREBASE=./storebase
#   bash scripts/dev.sh test   set up everything the tests need (apt packages,
#                              bubblewrap among them, dockerd as a one-node
#                              swarm, the Podman service, a one-node SLURM
#                              cluster (scripts/slurm-up.sh),
#                              PostgreSQL, test images, pip packages), lint, run
#                              every test, then test_swarm.sh (pman deployed as
#                              a Swarm stack, tested over HTTP)
#   bash scripts/dev.sh bench  the same set-up plus Debian's wrk, then the load
#                              benchmark (bench/load.py; its arguments follow);
#                              `bench slurm [args]` runs bench/slurm.py instead,
#                              `bench availability [args]` bench/availability.py,
#                              `bench compare [REF] [args]` bench/compare.py: load.py
#                              5 times against REF (default 25ba7ec, 4.0.0) and 5
#                              times against this tree, alternating; medians, ratios;
#                              `bench resources [args]` bench/resources.py: five
#                              compute resources against one (polls, tracker calls)
#
# Both are idempotent: what is installed or running already is left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${PMAN_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
log() { printf '[pman] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

apt_install() {  # apt_install PKG... : install what is missing, 'apt-get update' once
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
  command -v "$PYTHON" >/dev/null || apt_install python3
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || die "pman needs Python 3.11 or newer"
  # Debian's python3 ships venv and ensurepip separately
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  local stamp="$VENV/.pman-installed" want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing pman and its test tools into $VENV"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
    echo "$want" >"$stamp"
  fi
}

cmd_run() {
  setup_venv
  # the local backend (the default here) runs every job in a bubblewrap sandbox
  apt_install bubblewrap
  export CONTAINER_ENV=${CONTAINER_ENV:-local}
  export STOREBASE=${STOREBASE:-$ROOT/storebase}
  export PMAN_DATA_DIR=${PMAN_DATA_DIR:-$ROOT/pman-data}
  mkdir -p "$STOREBASE" "$PMAN_DATA_DIR"
  # pman serves nobody without credentials: a token of its own for this
  # checkout, made once (give PMAN_AUTH_TOKENS, or PMAN_AUTH=none, to choose)
  if [ -z "${PMAN_AUTH_TOKENS:-}${PMAN_AUTH_TOKENS_FILE:-}" ] && [ "${PMAN_AUTH:-}" != none ]; then
    local token_file=$PMAN_DATA_DIR/dev-token
    [ -s "$token_file" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
    export PMAN_AUTH_TOKENS_FILE=$token_file
    log "clients must send: Authorization: Bearer \$(cat $token_file)"
  fi
  # where it listens: PMAN_HOST and PMAN_PORT, whose defaults pman declares (docs/configuration.md)
  log "serving with CONTAINER_ENV=$CONTAINER_ENV STOREBASE=$STOREBASE (granian says where it listens)"
  exec "$VENV/bin/pman" serve
}

cmd_test() {
  setup_venv
  apt_install bubblewrap   # the local backend's sandbox (most tests use it)
  bash "$ROOT/scripts/engines-up.sh"
  bash "$ROOT/scripts/swarm-up.sh"
  bash "$ROOT/scripts/slurm-up.sh"
  bash "$ROOT/scripts/build-test-images.sh"
  PMAN_TEST_DATABASE_URL=$(bash "$ROOT/scripts/postgres-up.sh")
  export PMAN_TEST_DATABASE_URL
  cd "$ROOT"
  log "lint: ruff"
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  log "lint: the dependency rules between pman's parts (import-linter, pyproject.toml)"
  "$VENV/bin/lint-imports" --no-cache
  log "tests: pytest (engines required: a missing engine fails the run)"
  # pytest's exit code 5 (no tests collected) is a failure here like any other
  local tests=0 stack=0
  PMAN_REQUIRE_ENGINES=1 "$VENV/bin/pytest" -p no:cacheprovider "$@" || tests=$?
  log "deployment test: pman as a Swarm stack (test_swarm.sh)"
  bash "$ROOT/test_swarm.sh" || stack=$?
  log "pytest: exit $tests; test_swarm.sh: exit $stack"
  [ "$tests" = 0 ] && [ "$stack" = 0 ]
}

cmd_bench() {
  # set-up messages on stderr: stdout is the benchmark's JSON
  setup_venv >&2
  bash "$ROOT/scripts/engines-up.sh" >&2
  bash "$ROOT/scripts/swarm-up.sh" >&2
  bash "$ROOT/scripts/slurm-up.sh" >&2
  bash "$ROOT/scripts/build-test-images.sh" >&2
  apt_install wrk >&2
  cd "$ROOT"
  if [ "${1:-}" = slurm ]; then
    shift
    "$VENV/bin/python" bench/slurm.py "$@"   # the SLURM benchmark
  elif [ "${1:-}" = availability ]; then
    shift
    "$VENV/bin/python" bench/availability.py "$@"   # polls under streams, slow bodies, a stalled engine
  elif [ "${1:-}" = resources ]; then
    shift
    "$VENV/bin/python" bench/resources.py "$@"   # five compute resources against one
  elif [ "${1:-}" = compare ]; then
    shift
    # bench/load.py against a reference commit (default 25ba7ec, release 4.0.0), alternating
    local ref=()
    if [ -n "${1:-}" ] && [ "${1#-}" = "$1" ]; then ref=(--ref "$1"); shift; fi
    "$VENV/bin/python" bench/compare.py "${ref[@]}" -- "$@"
  else
    "$VENV/bin/python" bench/load.py "$@"
  fi
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  venv) setup_venv ;;
  *) echo "usage: $0 run|test [pytest args]|bench [bench args]|venv" >&2; exit 2 ;;
esac
