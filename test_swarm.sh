#!/usr/bin/env bash
# Deployment test: pman deployed from docker-compose.yml as a Docker Swarm
# stack, then tested through HTTP only (tests/remote).
#
#   bash test_swarm.sh [pytest args]
#
# It builds what is missing (a debootstrap Debian+Python base image, pman's
# image on it, the test plugin image), makes this Docker engine a one-node
# swarm if it is not in one, deploys a stack with a unique name, a free host
# port and a temporary STOREBASE, waits for pman to answer, runs
# `pytest tests/remote` against it, and removes everything it created, also
# when a test fails or the run is interrupted. Exit code: pytest's.
#
# Environment:
#   PMAN_CONTAINER_ENV    the backend the deployed pman uses (default below)
#   PMAN_DEPLOY_TIMEOUT   seconds to wait for pman to answer (default 180)
#   PMAN_KEEP_STACK=1     leave the stack and its data for debugging
# shellcheck disable=SC2317  # functions called from the EXIT trap are reachable
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
# the deployed pman's backend
export PMAN_CONTAINER_ENV=${PMAN_CONTAINER_ENV:-swarm}
VENV=${PMAN_VENV:-$ROOT/.venv}
DEPLOY_TIMEOUT=${PMAN_DEPLOY_TIMEOUT:-180}
STACK=pman-test-$(date +%s)-$$
SERVICE=${STACK}_pman
RUN_LABEL=org.chrisproject.pman.test-run
log() { printf '[test_swarm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() {  # a TCP port nothing listens on now (the kernel's pick for port 0)
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

stack_gone() {  # no service, container or network of the stack left
  [ -z "$(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK")" ] \
    && [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] \
    && [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]
}

ours() {  # ours container|service ID: a pman job of this run (its label, or a mount in our STOREBASE)
  local kind=$1 id=$2 fmt
  if [ "$kind" = container ]; then
    fmt="{{index .Config.Labels \"$RUN_LABEL\"}} {{range .Mounts}}{{.Source}} {{end}}"
  else
    fmt="{{index .Spec.Labels \"$RUN_LABEL\"}} {{index .Spec.TaskTemplate.ContainerSpec.Labels \"$RUN_LABEL\"}} {{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Source}} {{end}}"
  fi
  local word
  for word in $(docker "$kind" inspect --format "$fmt" "$id" 2>/dev/null); do
    [ "$word" = "$STACK" ] && return 0
    case "$word" in "$STOREBASE"/*) return 0 ;; esac
  done
  return 1
}

remove_jobs() {  # pman's job services and containers that this run created
  local id
  for id in $(docker service ls -q --filter label=org.chrisproject.pman=true 2>/dev/null); do
    ours service "$id" && { log "removing job service $id"; docker service rm "$id" >/dev/null; }
  done
  for id in $(docker ps -aq --filter label=org.chrisproject.pman=true); do
    ours container "$id" && { log "removing job container $id"; docker rm -f "$id" >/dev/null; }
  done
  return 0
}

show_logs() {  # show_logs LINES: pman's log, from Swarm or else from its task containers here
  local out id
  out=$(docker service logs --no-trunc --tail "$1" "$SERVICE" 2>&1)
  # `docker service logs` prints nothing for running tasks on some engines
  if [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    return 0
  fi
  for id in $(docker ps -aq --filter "label=com.docker.swarm.service.name=$SERVICE"); do
    log "docker logs of task container $id:"
    docker logs --tail "$1" "$id" >&2 2>&1
  done
}

cleanup() {
  local rc=$? leftovers=0 _
  set +e
  trap - EXIT INT TERM
  if [ "${PMAN_KEEP_STACK:-}" = 1 ]; then
    log "PMAN_KEEP_STACK=1: leaving stack $STACK and STOREBASE=$STOREBASE"
    exit "$rc"
  fi
  if [ "$deployed" = 1 ]; then
    log "removing stack $STACK"
    docker stack rm "$STACK" >/dev/null
    for _ in $(seq 1 120); do stack_gone && break; sleep 1; done
    stack_gone || { log "stack $STACK still has services, containers or networks"; leftovers=1; }
    # `docker stack rm` leaves named volumes: the job registry's
    docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null \
      || leftovers=1
  fi
  remove_jobs
  [ -n "$STOREBASE" ] && rm -rf "$STOREBASE"
  if [ "$leftovers" = 1 ] && [ "$rc" = 0 ]; then
    log "ERROR: cleanup left things behind"
    rc=1
  fi
  log "done (exit $rc)"
  exit "$rc"
}

# ------------------------------------------------------------ prerequisites
deployed=0
STOREBASE=""
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
bash scripts/dev.sh venv
bash scripts/engines-up.sh
bash scripts/build-test-images.sh docker
bash scripts/build-service-image.sh localhost/pman:latest
bash "$ROOT/scripts/swarm-up.sh"
log "prerequisites ready in $((SECONDS - t0))s"

# ------------------------------------------------------------ deploy
STOREBASE=$(mktemp -d /tmp/pman-stack-XXXXXX)
chmod 755 "$STOREBASE"
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
log "deploying stack $STACK (CONTAINER_ENV=$PMAN_CONTAINER_ENV, port $PORT, STOREBASE=$STOREBASE)"
deployed=1
# the images are local: no registry to resolve them against
# the deployed pman requires a bearer token, as any deployment should
PMAN_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
STOREBASE=$STOREBASE PMAN_PUBLISHED_PORT=$PORT PMAN_JOB_LABELS="$RUN_LABEL=$STACK" \
  PMAN_AUTH_TOKENS=$PMAN_TOKEN docker stack deploy --resolve-image never -c docker-compose.yml "$STACK" >&2

t1=$SECONDS
until curl -sf --max-time 5 -o /dev/null "$URL/health"; do
  if [ $((SECONDS - t1)) -ge "$DEPLOY_TIMEOUT" ]; then
    log "ERROR: pman did not answer at $URL/health within ${DEPLOY_TIMEOUT}s"
    docker service ps --no-trunc "$SERVICE" >&2
    show_logs 200
    curl -sS --max-time 5 "$URL/health" >&2 || true
    exit 1
  fi
  sleep 1
done
log "pman answers at $URL after $((SECONDS - t1))s"

# ------------------------------------------------------------ test
set +e
PMAN_URL=$URL PMAN_TOKEN=$PMAN_TOKEN PMAN_STOREBASE=$STOREBASE \
  PMAN_EXPECT_CONTAINER_ENV=$PMAN_CONTAINER_ENV PMAN_REQUIRE_ENGINES=1 "$VENV/bin/pytest" -p no:cacheprovider tests/remote "$@"
rc=$?
set -e
# pytest's 5 (no tests collected) is non-zero, hence a failure, like any other
[ "$rc" = 5 ] && log "ERROR: pytest collected no tests"
if [ "$rc" != 0 ]; then
  log "tests failed (exit $rc); pman's last log lines:"
  show_logs 50
fi
exit "$rc"
