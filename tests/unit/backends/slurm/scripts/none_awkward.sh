#!/bin/bash
# pman job my.job_2-x: 2 worker(s), container runtime none.
# Written by pman; the job's files are in /jobs/my.job_2-x.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
job_dir=/jobs/my.job_2-x
worker=${SLURM_ARRAY_TASK_ID:-1}
export PMAN_WORKER_INDEX=$worker PMAN_NUMBER_OF_WORKERS=2
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

cd '/srv/pman store/out '"'"'dir'"'"'' || exit 1
env 'A=it'"'"'s $HOME `x`' B= C=a=b=c 'D=/srv/pman store/in dir:/srv/pman store/out '"'"'dir'"'"'/y' 'E=line
break' 'PMAN_INCOMING=/srv/pman store/in dir' 'PMAN_OUTGOING=/srv/pman store/out '"'"'dir'"'"'' \
  tool --say 'it'"'"'s "quoted" $HOME `id` $(id) \ ;|&<>*?[]{}~#!' '--out=/srv/pman store/out '"'"'dir'"'"'/sub dir' '/srv/pman store/in dir/a' /share/outgoingx 'line
break' '' '--tab	here' 'ünïcødé' </dev/null &
child=$!
wait "$child"
rc=$?
record exit "$rc"
exit "$rc"
