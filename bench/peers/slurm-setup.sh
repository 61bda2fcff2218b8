#!/usr/bin/env bash
# A throw-away single-node Slurm cluster for the peer benchmark, tuned the way
# an administrator would tune it for many tiny jobs (see docs/bench-peers-slurm.md).
#
#   slurm-setup.sh DIR        start; prints SLURM_CONF=DIR/slurm.conf when the node is idle
#   slurm-setup.sh stop DIR   stop what start started and remove DIR
#
# Everything lives in DIR (config, state, spool, logs, pid files) so nothing
# depends on /etc/slurm and several clusters never share state. Only munged is
# system-wide, because Slurm talks to it over its fixed socket; it is stopped
# again only if this script started it.
set -euo pipefail

# The SLURM_BENCH_* variables exist for tuning experiments; the defaults are
# the measured choice. A trivial job holds its slot for its whole launch and
# completion round trip, far longer than it uses the CPU, so each CPU is
# shared by many jobs (partition OverSubscribe=FORCE:N).
SHARE=${SLURM_BENCH_SHARE:-64}
SCHED_TYPE=${SLURM_BENCH_SCHED_TYPE:-sched/builtin}
# No `defer`: it made every srun wait for the next scheduling pass (~1 s).
SCHED_PARAMS=${SLURM_BENCH_SCHED_PARAMS:-batch_sched_delay=0,sched_min_interval=100000,max_rpc_cnt=64}
PROCTRACK=${SLURM_BENCH_PROCTRACK:-proctrack/linuxproc}
MUNGE_THREADS=${SLURM_BENCH_MUNGE_THREADS:-10}
START_TIMEOUT=${SLURM_BENCH_START_TIMEOUT:-60}

die () { echo "slurm-setup: $*" >&2; exit 1; }

# Poll `$@` until it succeeds or $1 seconds pass; daemons daemonise before they
# are ready, so readiness has to be observed rather than assumed.
wait_for () {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# Terminate the daemons named by the pid files, escalating to SIGKILL after
# 10 s. All at once, because each takes about 2 s to shut down.
stop_pids () {
  local file pid pids=()
  for file in "$@"; do
    [[ -s $file ]] || continue
    pid=$(cat "$file")
    if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  for pid in "${pids[@]}"; do
    if ! wait_for 10 bash -c "! kill -0 $pid"; then
      echo "slurm-setup: $pid ignored SIGTERM, killing" >&2
      kill -KILL "$pid" 2>/dev/null || echo "slurm-setup: $pid already gone" >&2
    fi
  done
}

munge_ok () { munge -n </dev/null | unmunge >/dev/null; }

start_munge () {
  if munge_ok 2>/dev/null; then return 0; fi
  command -v munged >/dev/null || die "munged not installed"
  # munged refuses keys and directories that others can read or write.
  install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  # More threads than the default 2: every Slurm RPC is a munge round trip
  # (SchedMD's high-throughput guide suggests 10).
  runuser -u munge -- munged --num-threads="$MUNGE_THREADS" || die "munged failed to start"
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
  wait_for 10 munge_ok || die "munged started but does not answer"
}

# Two consecutive free TCP ports, so a concurrent cluster or a system Slurm
# on the default 6817/6818 never collides with this one. Drawn from below the
# kernel's ephemeral range and checked against sockets in any state: a port
# an outgoing connection holds is as unbindable as a listening one.
free_ports () {
  local base low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
  for _ in $(seq 50); do
    base=$((10000 + RANDOM % (low - 10002)))
    if [[ -z $(ss -Htan "( sport = :$base or sport = :$((base + 1)) )") ]]; then
      echo "$base"; return 0
    fi
  done
  die "no free port pair found"
}

write_conf () {
  local host=$1 cpus=$2 port=$3
  : >"$DIR/plugstack.conf"
  cat >"$DIR/slurm.conf" <<EOF
ClusterName=rgridbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/plugstack.conf
SlurmctldDebug=error
SlurmdDebug=error
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ProctrackType=$PROCTRACK
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=$SCHED_TYPE
SchedulerParameters=$SCHED_PARAMS
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MaxJobCount=100000
MaxArraySize=100001
MinJobAge=2
MessageTimeout=30
ReturnToService=2
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=bench Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:$SHARE
EOF
}

node_idle () {
  local state
  state=$(SLURM_CONF=$DIR/slurm.conf sinfo -h -N -n "$1" -o %T 2>/dev/null) || return 1
  [[ $state == idle ]]
}

start () {
  for bin in slurmctld slurmd sbatch srun squeue sinfo munge unmunge; do
    command -v "$bin" >/dev/null || die "$bin not installed"
  done
  mkdir -p "$DIR"/{state,spool,run,log}
  # A half-started cluster is stopped at once, not left for the caller.
  trap 'rc=$?; if ((rc != 0)); then stop; fi' EXIT
  local host port
  host=$(hostname -s)
  start_munge
  port=$(free_ports)
  write_conf "$host" "$(nproc)" "$port"
  export SLURM_CONF=$DIR/slurm.conf
  # -c: a throw-away cluster starts from empty job state.
  slurmctld -c -f "$SLURM_CONF" || die "slurmctld failed: $(tail -5 "$DIR/log/slurmctld.log" 2>&1)"
  wait_for "$START_TIMEOUT" scontrol ping || die "slurmctld not answering: $(tail -5 "$DIR/log/slurmctld.log" 2>&1)"
  slurmd -f "$SLURM_CONF" || die "slurmd failed: $(tail -5 "$DIR/log/slurmd.log" 2>&1)"
  wait_for "$START_TIMEOUT" node_idle "$host" \
    || die "node $host never became idle ($(sinfo -h -N -o '%T %E' 2>&1)): $(tail -5 "$DIR/log/slurmd.log" 2>&1)"
  echo "SLURM_CONF=$SLURM_CONF"
}

stop () {
  [[ -d $DIR/run ]] || { rm -rf "$DIR"; return 0; }
  stop_pids "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"
  # Job step daemons detach from slurmd; ours are the ones holding this
  # cluster's log open, which singles them out from any other Slurm.
  local fd pid
  # One find, not a readlink per descriptor: forks are slow in a sandbox.
  for fd in $(find /proc/[0-9]*/fd -maxdepth 1 -lname "$DIR/*" 2>/dev/null); do
    pid=${fd#/proc/}; pid=${pid%%/*}
    [[ $pid == "$$" ]] || kill -KILL "$pid" 2>/dev/null || echo "slurm-setup: step $pid already gone" >&2
  done
  stop_pids "$DIR/run/munged.pid"
  rm -rf "$DIR"
}

case ${1:-} in
  stop) [[ -n ${2:-} ]] || die "usage: $0 stop DIR"; DIR=$(realpath -m "$2"); stop ;;
  '' | -*) die "usage: $0 DIR | $0 stop DIR" ;;
  *) DIR=$(realpath -m "$1"); start ;;
esac
