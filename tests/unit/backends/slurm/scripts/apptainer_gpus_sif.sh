#!/bin/bash
# pman job job-1: 1 worker(s), container runtime apptainer.
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
if ! command -v apptainer >/dev/null 2>&1; then
  echo "pman: apptainer is not installed on node $(hostname)" >&2
  record error "apptainer is not installed on node $(hostname)"
  exit 125
fi
# SLURM signals every process of the job; pass it on and end with the command
on_signal() {
  trap - TERM INT HUP USR1 USR2 XCPU
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit 143
}
trap on_signal TERM INT HUP USR1 USR2 XCPU
export APPTAINERENV_X_1='$y z'
export APPTAINERENV__u=''
export APPTAINERENV_PMAN_WORKER_INDEX="$PMAN_WORKER_INDEX"
export APPTAINERENV_PMAN_NUMBER_OF_WORKERS="$PMAN_NUMBER_OF_WORKERS"
apptainer exec \
  --containall \
  --cleanenv \
  --bind '/srv/pman store/key/in:/share/incoming:ro' \
  --bind '/srv/pman store/key/out:/share/outgoing:rw' \
  --nv \
  /images/tool.sif \
  simpledsapp --prefix 'it'"'"'s' /share/incoming /share/outgoing </dev/null &
child=$!
wait "$child"
rc=$?
record exit "$rc"
exit "$rc"
