#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests (tests/test_slurm.py) and for trying
# the Slurm profile before a real cluster:
#
#   workflow/profiles/slurm/local-cluster.sh start DIR   # conf, logs, pids and the accounting DB in DIR
#   export SLURM_CONF=DIR/slurm.conf                      # then sbatch, squeue, sacct, snakemake ...
#   workflow/profiles/slurm/local-cluster.sh stop DIR    # cancels the jobs, stops every daemon by its pid
#
# It runs what a real cluster runs: munged, slurmctld, slurmd, and job accounting (slurmdbd on a
# MariaDB database), so `sacct`, the plugin's default status query, answers as on a cluster.
# Needs root and Debian's packages: apt-get install slurm-wlm slurmdbd munge mariadb-server.
# The node offers SLURM_CPUS cores (default: 2, at most the machine's), 80% of the memory and one
# count-only GPU ("gpu:1", no device behind it) so that GPU requests can be scheduled and checked.
# Jobs run as root; srun inside a job reads /etc/slurm/slurm.conf, so start links it there (and
# refuses to replace one that is not its own), stop removes the link.
set -euo pipefail

PARTITION=debug
CLUSTER=seqcomp
ACCOUNT=seqcomp
PORTS=(6817 6818 6819 3307)   # slurmctld, slurmd, slurmdbd, mariadb: 127.0.0.1 only for the last
DAEMONS=(slurmd slurmctld slurmdbd mariadb munged)   # stop order
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=/run/munge/munge.socket.2

die() { echo "local-cluster: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within the time allowed (logs: $DIR/log)"
        sleep 0.5
    done
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_confs() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(( $(nproc) < ${SLURM_CPUS:-2} ? $(nproc) : ${SLURM_CPUS:-2} ))
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat >"$DIR/slurm.conf" <<EOF
# Written by local-cluster.sh: one node ($host), one partition ($PARTITION), accounting in slurmdbd.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${PORTS[0]}
SlurmdPort=${PORTS[1]}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in a container: processes are tracked by parentage, memory by polling (below).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# A job over its --mem is killed (polled every second), as cgroups would on a real cluster.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=${PORTS[2]}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment   # sacct shows the plugin's --comment (rule and wildcards)
ReturnToService=2
SchedulerParameters=sched_interval=2
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$host Name=gpu File=/dev/null" >"$DIR/gres.conf"   # a GPU slot with no device: jobs run on the CPU
    # slurmdbd reads slurmdbd.conf beside slurm.conf and insists on mode 600 (it holds the DB password).
    install -m 600 /dev/stdin "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=${PORTS[2]}
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${PORTS[3]}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
}

start_munged() {
    dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
    chmod 600 "$DIR/munge.key"
    # On munge's default socket: Slurm 22.05's clients (sacctmgr, srun) ignore AuthInfo=socket=.
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    munged --force --key-file="$DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munged.seed"
    wait_for 20 munged test -S "$MUNGE_SOCKET"
}

start_mariadb() {
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root >"$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed: $DIR/log/mariadb-install.log"
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysql.sock" \
        --bind-address=127.0.0.1 --port="${PORTS[3]}" --pid-file="$DIR/run/mariadb.pid" \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb --no-defaults -S "$DIR/run/mysql.sock" -u root -e "select 1"
    mariadb --no-defaults -S "$DIR/run/mysql.sock" -u root -e \
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
    slurmdbd
    wait_for 60 slurmdbd listening "${PORTS[2]}"
    # What a site admin does once: the cluster, an account, and this user in it.
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null
    sacctmgr -i add user "$(id -un)" account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null
    slurmctld -i
    wait_for 30 slurmctld scontrol ping
    slurmd
    wait_for 60 "slurmd (node idle in sinfo)" bash -c '[[ $(sinfo -h -N -o %T) == idle ]]'
}

start() {
    local cmd port
    for cmd in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install slurm-wlm slurmdbd munge mariadb-server"
    done
    [[ $(id -u) == 0 ]] || die "needs root (slurmd runs jobs as their submitter)"
    for port in "${PORTS[@]}"; do
        ! listening "$port" || die "port $port is in use: is another cluster running? ($0 stop DIR)"
    done
    if [[ -e $ETC_CONF && ! -L $ETC_CONF ]]; then
        die "$ETC_CONF exists and is not ours: this machine has a Slurm already"
    fi
    ! munge -n >/dev/null 2>&1 || die "a munged is running already ($MUNGE_SOCKET): is another cluster up?"
    mkdir -p "$DIR"/{log,run,spool/ctld,spool/d}
    DIR=$(cd "$DIR" && pwd)
    export SLURM_CONF=$DIR/slurm.conf
    write_confs
    mkdir -p "$(dirname $ETC_CONF)" && ln -sfn "$DIR/slurm.conf" "$ETC_CONF"
    trap 'stop' EXIT   # a failed start (die exits) stops what it started
    start_munged
    start_mariadb
    start_slurm
    trap - EXIT
    echo "local-cluster: up; export SLURM_CONF=$SLURM_CONF (partition $PARTITION, account $ACCOUNT)"
}

stop_pid() {  # stop_pid NAME: SIGTERM the pid in its pid file, wait up to 30 s, then SIGKILL
    local file=$DIR/run/$1.pid pid i
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    local name jobs i
    export SLURM_CONF=$DIR/slurm.conf
    # Running jobs outlive slurmd (slurmstepd is its own process): cancel them first.
    if [[ -s $DIR/run/slurmctld.pid ]] && kill -0 "$(<"$DIR/run/slurmctld.pid")" 2>/dev/null; then
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 40; i++)); do
                [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    for name in "${DAEMONS[@]}"; do
        stop_pid "$name"
    done
    if [[ $(readlink "$ETC_CONF" 2>/dev/null) == "$DIR/slurm.conf" ]]; then
        rm -f "$ETC_CONF"
    fi
}

[[ $# == 2 && ($1 == start || $1 == stop) ]] || die "usage: $0 start|stop DIR"
DIR=$2
if [[ $1 == stop ]]; then
    [[ -d $DIR ]] || exit 0
    DIR=$(cd "$DIR" && pwd)
fi
"$1"
