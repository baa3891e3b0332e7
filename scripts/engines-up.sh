#!/usr/bin/env bash
# Install and start the container engines the integration tests talk to:
# dockerd (Docker Engine API on /var/run/docker.sock) and Podman's
# Docker-compatible API service (/run/podman/podman.sock).  Idempotent: what
# is installed is not installed again, what answers is not restarted.
set -euo pipefail
log() { printf '[engines-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"

# Daemons started here inherit our working folder; if it is later deleted
# (a CI clone), Podman's conmon fails every container: start them from /.
cd /

DOCKER_SOCK=/var/run/docker.sock
PODMAN_SOCK=/run/podman/podman.sock
LOGDIR=${PMAN_ENGINE_LOGDIR:-/var/log/pman-engines}
mkdir -p "$LOGDIR"

# ---------------------------------------------------------------- packages
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v podman >/dev/null || need+=(podman)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v curl >/dev/null || need+=(curl)
command -v pgrep >/dev/null || need+=(procps)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No daemon autostart from package scripts: we start them ourselves below.
  policy=/usr/sbin/policy-rc.d; made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f "$policy"
fi
# busybox-static replaces the dynamic busybox; the test images need the static one
file_out=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
case "$file_out" in *"not a dynamic"*|*"statically linked"*) ;; *) die "/bin/busybox is not static (install busybox-static)";; esac

# ---------------------------------------------------------------- dockerd
docker_ok() { curl -sf --max-time 3 --unix-socket "$DOCKER_SOCK" http://d/_ping >/dev/null 2>&1; }
alive() {  # alive PID NAME: a live (not zombie) process called NAME
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}
live_dockerd() { local p; for p in $(pgrep -x dockerd); do alive "$p" dockerd && { echo "$p"; return 0; }; done; return 1; }
wait_docker() { local _; for _ in $(seq 1 "$1"); do docker_ok && return 0; sleep 0.2; done; return 1; }
if pid=$(live_dockerd) && readlink "/proc/$pid/cwd" | grep -q '(deleted)'; then
  log "dockerd (pid $pid) runs in a deleted folder; restarting it"
  kill "$pid"; for _ in $(seq 1 100); do alive "$pid" dockerd || break; sleep 0.1; done
fi
if ! docker_ok; then
  if pid=$(live_dockerd); then
    log "dockerd (pid $pid) runs but does not answer yet; waiting"
    if ! wait_docker 150; then
      log "dockerd (pid $pid) never answered; restarting it"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" dockerd || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # A dockerd started right after a hard stop sometimes gives up waiting for
  # its containerd ("timeout waiting for containerd to start"): try again.
  for attempt in 1 2 3; do
    docker_ok && break
    # after a hard stop dockerd leaves its pid file and refuses to start
    pidf=/var/run/docker.pid
    if [ -s "$pidf" ] && ! alive "$(tr -dc '0-9' <"$pidf")" dockerd; then
      log "removing stale $pidf"
      rm -f "$pidf"
    fi
    log "starting dockerd, attempt $attempt (log: $LOGDIR/dockerd.log)"
    setsid dockerd >>"$LOGDIR/dockerd.log" 2>&1 </dev/null &
    dpid=$!
    for _ in $(seq 1 300); do
      docker_ok && break
      alive "$dpid" dockerd || { log "dockerd exited during start-up"; break; }
      sleep 0.2
    done
  done
  docker_ok || { tail -n 30 "$LOGDIR/dockerd.log" >&2; die "dockerd does not answer on $DOCKER_SOCK"; }
fi
log "docker answers on $DOCKER_SOCK ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"

# ---------------------------------------------------------------- podman
podman_ok() { curl -sf --max-time 3 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; }
start_podman() {
  mkdir -p "$(dirname "$PODMAN_SOCK")"
  rm -f "$PODMAN_SOCK"
  log "starting podman system service (log: $LOGDIR/podman.log)"
  setsid podman system service --time=0 "unix://$PODMAN_SOCK" >>"$LOGDIR/podman.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do podman_ok && break; sleep 0.2; done
  podman_ok || { tail -n 30 "$LOGDIR/podman.log" >&2; die "podman service does not answer on $PODMAN_SOCK"; }
}
podman_ok || start_podman
# A service whose working folder was deleted answers pings but cannot run a
# container ("conmon: Failed to get working directory"): restart it.
svc=$(pgrep -n -f '^podman system service' || true)
if [ -n "$svc" ] && readlink "/proc/$svc/cwd" | grep -q '(deleted)'; then
  log "podman service (pid $svc) runs in a deleted folder; restarting it"
  kill "$svc"; for _ in $(seq 1 50); do kill -0 "$svc" 2>/dev/null || break; sleep 0.1; done
  start_podman
fi

# Rootful Podman gives containers nofile/nproc limits above its own; without
# CAP_SYS_RESOURCE (as in some VMs and containers) runc may not raise them and
# every container fails with "error setting rlimit". Cap them at the limits the
# service itself runs with, and restart it so that it reads them.
ULIMITS_CONF=/etc/containers/containers.conf.d/50-pman-ulimits.conf
cap_eff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
if (( (16#$cap_eff >> 24) & 1 )); then
  rm -f "$ULIMITS_CONF"
else
  svc=$(pgrep -n -f '^podman system service') || die "podman service pid not found"
  nofile=$(awk '/^Max open files/ {print $5}' "/proc/$svc/limits")
  nproc=$(awk '/^Max processes/ {print $4}' "/proc/$svc/limits")
  want="# written by pman scripts/engines-up.sh: no CAP_SYS_RESOURCE on this host
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
  if [ "$(cat "$ULIMITS_CONF" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$(dirname "$ULIMITS_CONF")"
    printf '%s\n' "$want" >"$ULIMITS_CONF"
    log "capped Podman container ulimits at nofile=$nofile nproc=$nproc ($ULIMITS_CONF); restarting the service"
    kill "$svc"; for _ in $(seq 1 50); do kill -0 "$svc" 2>/dev/null || break; sleep 0.1; done
    start_podman
  fi
fi
log "podman answers on $PODMAN_SOCK ($(podman version -f '{{.Server.Version}}' 2>/dev/null || podman --version))"
