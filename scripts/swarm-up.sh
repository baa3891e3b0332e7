#!/usr/bin/env bash
# Make this Docker engine a single-node swarm manager (for the swarm backend's
# tests). Idempotent: an active swarm is left alone; it never leaves a swarm.
set -euo pipefail
log() { printf '[swarm-up] %s\n' "$*" >&2; }
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)
case "$state" in
  active) ;;
  pending)
    # a join or init in progress: give it a moment rather than starting another
    for _ in $(seq 1 50); do
      state=$(docker info --format '{{.Swarm.LocalNodeState}}')
      [ "$state" = active ] && break
      sleep 0.2
    done ;;
  *)
    log "making this Docker a single-node swarm manager"
    # another process may init at the same moment: "already part of a swarm" is fine
    out=$(docker swarm init --advertise-addr 127.0.0.1 2>&1) \
      || case "$out" in *"already part of a swarm"*) ;; *) log "$out"; exit 1 ;; esac ;;
esac
manager=$(docker info --format '{{.Swarm.ControlAvailable}}')
[ "$manager" = true ] || { log "ERROR: this node is in a swarm but not a manager"; exit 1; }
log "swarm manager active (node $(docker info --format '{{.Swarm.NodeID}}'))"
