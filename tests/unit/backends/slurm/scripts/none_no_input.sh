#!/bin/bash
# pman job job-1: 1 worker(s), container runtime none.
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

# SLURM signals every process of the job; pass it on and end with the command
on_signal() {
  trap - TERM INT HUP USR1 USR2 XCPU
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit 143
}
trap on_signal TERM INT HUP USR1 USR2 XCPU

cd '/srv/pman store/out' || exit 1
env 'PMAN_INCOMING=/srv/pman store' 'PMAN_OUTGOING=/srv/pman store/out' \
  run </dev/null &
child=$!
wait "$child"
rc=$?
record exit "$rc"
exit "$rc"
