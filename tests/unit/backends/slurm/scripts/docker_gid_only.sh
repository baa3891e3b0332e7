#!/bin/bash
# pman job job-1: 1 worker(s), container runtime docker.
# Written by pman; the job's files are in /var/lib/pman/slurm/jobs/job-1.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
job_dir=/var/lib/pman/slurm/jobs/job-1
worker=${SLURM_ARRAY_TASK_ID:-1}
export PMAN_WORKER_INDEX=$worker PMAN_NUMBER_OF_WORKERS=1
# record(NAME, TEXT): what happened to this worker, for pman
record() {
  printf '%s\n' "$2" >"$job_dir/.$1.$worker" && mv -f "$job_dir/.$1.$worker" "$job_dir/$1.$worker"
}
child=""
engine=docker
container=job-1-"$SLURM_JOB_ID"
if ! command -v "$engine" >/dev/null 2>&1; then
  echo "pman: $engine is not installed on node $(hostname)" >&2
  record error "$engine is not installed on node $(hostname)"
  exit 125
fi
# (podman's rm -f would wait 10 s for the container to stop: as long as SLURM's KillWait)
remove() { "$engine" rm -f "$container" >/dev/null 2>&1; }
# SLURM signals the job's processes on scancel and at its time limit; the
# container is the engine's child, not ours: remove it before SLURM's SIGKILL
on_signal() {
  trap - TERM INT HUP USR1 USR2 XCPU
  echo "pman: the job was signalled (cancelled or out of time): removing container $container" >&2
  remove
  if [ -n "$child" ]; then wait "$child" 2>/dev/null; fi
  remove
  exit 143
}
trap on_signal TERM INT HUP USR1 USR2 XCPU
"$engine" run --name "$container" \
  --label org.chrisproject.pman.slurm-job="$SLURM_JOB_ID" \
  -v '/srv/pman store/key/in:/share/incoming:ro' \
  -v '/srv/pman store/key/out:/share/outgoing:rw' \
  -e 'GREETING=hello world' \
  -e WHERE=/share/outgoing/x \
  -e PMAN_WORKER_INDEX \
  -e PMAN_NUMBER_OF_WORKERS \
  --memory=300m \
  --memory-swap=300m \
  --cpus=1.5 \
  --group-add=1001 \
  --entrypoint true \
  fnndsc/pl-simpledsapp:2.1 </dev/null &
child=$!
wait "$child"
rc=$?
oom=$("$engine" inspect --format '{{.State.OOMKilled}}' "$container" 2>/dev/null)
started=$("$engine" inspect --format '{{.State.StartedAt}}' "$container" 2>/dev/null)
remove
if [ "$oom" = true ]; then record oom "OOMKilled"; fi
if [ "$rc" = 125 ] && { [ -z "$started" ] || [ "${started#0001-}" != "$started" ]; }; then
  record error "$engine could not start the container (exit code 125); see the job's logs"
fi
record exit "$rc"
exit "$rc"
