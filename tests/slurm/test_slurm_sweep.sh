#!/usr/bin/env bash
# A real single-node Slurm on localhost runs a small sweep as a job array:
#   twostage sweep --emit slurm  ->  sbatch  ->  wait  ->  twostage sweep --collect  ->  the store has every job done.
#
# Needs root and Debian's slurm-wlm and munge (setup.sh installs them). Everything lives in a temporary folder:
# its own munge key and socket, slurm.conf on free ports (SLURM_CONF), state and logs; nothing in /etc is touched.
# The daemons are stopped on every exit path (trap). Not root, or Slurm missing: the test FAILS, saying why, unless
# TWOSTAGE_SKIP_SLURM=1 (then it exits 77, which CTest reports as skipped).
#
# usage: tests/slurm/test_slurm_sweep.sh PATH/TO/twostage      (from the source root, as CTest runs it)
set -euo pipefail

if [ "${TWOSTAGE_SKIP_SLURM:-0}" = 1 ]; then
  echo "slurm test skipped: TWOSTAGE_SKIP_SLURM=1"
  exit 77
fi
fail() { echo "slurm test FAILED: $*" >&2; exit 1; }

twostage=${1:?usage: $0 PATH/TO/twostage}
[ -x "$twostage" ] || fail "no twostage executable at '$twostage'"
twostage=$(cd "$(dirname "$twostage")" && pwd)/$(basename "$twostage")
[ "$(id -u)" -eq 0 ] || fail "it starts munged, slurmctld and slurmd, which needs root (or set TWOSTAGE_SKIP_SLURM=1)"
for program in munged munge slurmctld slurmd sbatch squeue sinfo scontrol; do
  command -v "$program" >/dev/null ||
    fail "'$program' not found: apt-get install slurm-wlm munge (or set TWOSTAGE_SKIP_SLURM=1)"
done

# The daemons check their folders: the temporary folder and the socket's folder must be traversable by everyone.
work=$(mktemp -d /tmp/twostage-slurm.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/munge" "$work/socket" "$work/state" "$work/spool" "$work/log"
chmod 700 "$work/munge"
chmod 755 "$work/socket"
export SLURM_CONF="$work/slurm.conf"

cleanup() {
  local status=$?
  set +e
  if [ -f "$work/slurmctld.pid" ] || [ -f "$work/slurmd.pid" ]; then
    scontrol shutdown >/dev/null 2>&1
  fi
  for pid_file in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munge/munged.pid"; do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  if [ "$status" -ne 0 ]; then
    echo "--- slurmctld log (tail) ---"; tail -n 30 "$work/log/slurmctld.log" 2>/dev/null
    echo "--- slurmd log (tail) ---"; tail -n 30 "$work/log/slurmd.log" 2>/dev/null
    echo "--- munged log (tail) ---"; tail -n 10 "$work/munge/munged.log" 2>/dev/null
    for output in "$work"/sweep/slurm/*.out; do [ -f "$output" ] && { echo "--- $output ---"; tail -n 20 "$output"; }; done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# munge: a fresh key (1024 random bytes) and our own socket.
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munge_socket="$work/socket/munge.socket"
munged --key-file="$work/munge/munge.key" --socket="$munge_socket" --pid-file="$work/munge/munged.pid" \
  --seed-file="$work/munge/munged.seed" --log-file="$work/munge/munged.log" ||
  fail "munged did not start: $(tail -n 3 "$work/munge/munged.log" 2>/dev/null)"
munge -S "$munge_socket" -n | unmunge -S "$munge_socket" >/dev/null || fail "munge cannot decode its own credential"

# Two free TCP ports for slurmctld and slurmd.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 30000))
    if ! port_in_use "$port" && [ "$port" != "${1:-}" ]; then echo "$port"; return; fi
  done
}
controller_port=$(pick_port)
node_port=$(pick_port "$controller_port")
[ -n "$controller_port" ] && [ -n "$node_port" ] || fail "no free TCP ports for slurmctld and slurmd"

# The node's real CPUs and memory, as slurmd itself reports them.
node_hardware=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
cat > "$SLURM_CONF" <<EOF
ClusterName=twostagetest
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$controller_port
SlurmdPort=$node_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=twostagenode NodeAddr=127.0.0.1 $node_hardware State=UNKNOWN
PartitionName=debug Nodes=twostagenode Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -i || fail "slurmctld did not start"
slurmd -N twostagenode || fail "slurmd did not start"
state=""
for _ in $(seq 100); do
  state=$(sinfo -h -n twostagenode -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || fail "the node is '$state', not idle, 20 s after slurmd started"
echo "slurm: node twostagenode idle (controller port $controller_port, node port $node_port)"

# The sweep: 8 toy jobs (tests/fixtures/sweep/small_sweep.lua), one array task each.
sweep_dir="$work/sweep"
"$twostage" sweep tests/fixtures/sweep/small_sweep.lua --out "$sweep_dir" --set slurm.partition=debug --emit slurm
script="$sweep_dir/slurm/sweep.sbatch"
[ -f "$script" ] || fail "--emit slurm wrote no $script"
grep -q '^#SBATCH --array=0-7$' "$script" || fail "the script's array is not 0-7"

job_id=$(sbatch --parsable "$script") || fail "sbatch refused the script"
job_id=${job_id%%;*}
echo "slurm: submitted array job $job_id"
for _ in $(seq 600); do
  [ -z "$(squeue -h -j "$job_id" 2>/dev/null)" ] && break
  sleep 0.2
done
[ -z "$(squeue -h -j "$job_id" 2>/dev/null)" ] || fail "array job $job_id still queued or running after 120 s"

"$twostage" sweep tests/fixtures/sweep/small_sweep.lua --out "$sweep_dir" --set slurm.partition=debug --collect 2>&1 |
  tee "$work/collect.txt"
grep -q "8 done, 0 failed, 0 running, 0 not started (8 rows updated)" "$work/collect.txt" ||
  fail "--collect did not find 8 finished jobs"
"$twostage" results "$sweep_dir" 2>&1 | tee "$work/results.txt"
grep -q "8 jobs, 8 done, 0 failed, 0 pending, 0 running" "$work/results.txt" || fail "the store does not hold 8 done jobs"
ran_under_slurm=$(grep -l '"runner": "slurm"' "$sweep_dir"/jobs/*/job.json | wc -l)
[ "$ran_under_slurm" -eq 8 ] || fail "$ran_under_slurm of 8 job folders were written by Slurm tasks"
grep -q "$job_id" "$sweep_dir"/jobs/*/job.json || fail "job.json does not name the Slurm job"
"$twostage" sweep tests/fixtures/sweep/small_sweep.lua --out "$sweep_dir" --set slurm.partition=debug --emit slurm 2>&1 |
  grep -q "nothing to emit" || fail "a second --emit slurm should have nothing left to run"
echo "slurm test passed: 8 jobs ran as array job $job_id and were collected"
