#!/usr/bin/env bash
# A one-node SLURM cluster on this Debian machine, to try coordexp's `hydra/launcher=slurm` for real.
#
#   sudo scripts/slurm_cluster.sh up       # install what is missing, configure, start, wait until the node is idle
#   sudo scripts/slurm_cluster.sh status   # what runs, and what this script started
#   sudo scripts/slurm_cluster.sh down     # stop what `up` started, nothing else
#
# It runs without systemd: munged, MariaDB, slurmdbd (accounting: submitit polls sacct), slurmctld and
# slurmd are started directly, each in the foreground of its own session, and their process ids kept in
# $STATE_DIR so that `down` stops exactly those. A daemon that already answers is used, not started
# again, and never stopped. Every step is idempotent: `up` twice is `up` once.
set -euo pipefail

CLUSTER=coordexp
STATE_DIR=${COORDEXP_SLURM_STATE:-/run/coordexp-slurm}   # pids of the daemons this script started
LOG_DIR=/var/log/slurm
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# written by coordexp scripts/slurm_cluster.sh"   # a config without it is someone else's: never overwritten
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; `down` stops them in reverse
NODE=$(hostname -s)

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 1; }

# Wait up to $1 seconds for the command that follows to succeed.
wait_for() {
    local seconds=$1; shift
    for _ in $(seq "$((seconds * 5))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# The pid this script recorded for daemon $1, if that process still runs that daemon.
our_pid() {
    local pidfile=$STATE_DIR/$1.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    # the recorded pid must still be that daemon: pids are reused
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]] && { echo "$pid"; return 0; }
    rm -f "$pidfile"
    return 1
}

# Has process $1 ended (a zombie that no one reaped yet counts as ended)?
gone() { [[ ! -e /proc/$1 ]] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Does daemon $1 answer, whoever started it?
answers() {
    case $1 in
        munged) munge -n </dev/null | unmunge ;;
        mariadbd) mariadb-admin --protocol=socket ping ;;
        slurmdbd) sacctmgr -n list cluster ;;
        slurmctld) scontrol ping | grep -q UP ;;
        slurmd) [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null) =~ ^(idle|mixed|allocated|completing|planned)$ ]] ;;  # planned: idle, held for a pending job
    esac
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    # keep the packages' scripts from starting services: this script starts and stops its own
    local policy=/usr/sbin/policy-rc.d added=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ -z $added ]] || rm -f "$policy"
}

# Write $2 into file $1 (mode $3, owner $4) unless a config of someone else's is there.
write_config() {
    local path=$1 text=$2 mode=$3 owner=$4
    if [[ -e $path ]] && ! grep -qF "$MARKER" "$path"; then
        die "$path exists and was not written by this script; move it away to use this local cluster"
    fi
    printf '%s\n%s\n' "$MARKER" "$text" >"$path.tmp"
    chmod "$mode" "$path.tmp" && chown "$owner" "$path.tmp" && mv "$path.tmp" "$path"
}

configure() {
    # the node as slurmd detects it (CPUs, sockets, cores, memory in MB), reachable on the loopback
    local node cpus memory
    node=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$NODE NodeAddr=127.0.0.1/")
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mkdir -p /etc/slurm "$LOG_DIR" /var/lib/slurm/slurmctld /var/spool/slurmd
    chown slurm:slurm "$LOG_DIR" /var/lib/slurm/slurmctld
    write_config "$SLURM_CONF" "ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# no systemd and no cgroups here: processes are tracked through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# accounting (sacct) through slurmdbd: submitit polls sacct for jobs that end without a result
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# CPUs and memory are what jobs ask for, so several jobs share the node
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((memory / cpus))
# a job that asks for more than the node has is refused at submission instead of pending forever
EnforcePartLimits=ALL
# a requeued job restarts within seconds instead of after the default 120 s credential lifetime
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
KillWait=10
ReturnToService=2
MailProg=/bin/true
$node State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP" 644 root:root
    # the database user logs in through MariaDB's unix socket as the OS user slurm: no password to keep
    write_config "$DBD_CONF" "DbdHost=localhost
SlurmUser=slurm
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db" 600 slurm:slurm
}

# Start daemon $1 with the command that follows, in the foreground of its own session, unless it answers.
start() {
    local name=$1; shift
    if our_pid "$name" >/dev/null || answers "$name" >/dev/null 2>&1; then
        return 0
    fi
    say "starting $name"
    setsid "$@" >>"$LOG_DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/$name.pid"
    wait_for 60 answers "$name" || die "$name did not answer within 60 s; see $LOG_DIR/$name.out and $LOG_DIR/$name.log"
}

up() {
    install_packages
    configure
    mkdir -p "$STATE_DIR"
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o mysql -g mysql -m 755 /run/mysqld
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    start mariadbd /usr/sbin/mariadbd --user=mysql
    mariadb --protocol=socket -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    start slurmdbd /usr/sbin/slurmdbd -D
    # slurmctld reports its jobs to the accounting database under its cluster's name
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    start slurmctld /usr/sbin/slurmctld -D
    start slurmd /usr/sbin/slurmd -D
    say "up: node $NODE idle ($(sinfo -h -n "$NODE" -o '%c CPUs, %m MB'))"
}

down() {
    local i name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        pid=$(our_pid "$name") || continue
        say "stopping $name ($pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 30 gone "$pid" || { say "$name ($pid) ignored SIGTERM for 30 s; killing it"; kill -KILL "$pid" || true; }
        rm -f "$STATE_DIR/$name.pid"
    done
    say "down"
}

status() {
    local name pid up=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(our_pid "$name"); then
            echo "$name: running, started by this script ($pid)"
        elif answers "$name" >/dev/null 2>&1; then
            echo "$name: running, not started by this script"
        else
            echo "$name: not running"; up=1
        fi
    done
    sinfo 2>/dev/null || true
    return $up
}

case ${1:-} in
    up | down | status)
        [[ $EUID -eq 0 ]] || { echo "slurm_cluster: error: run as root (it installs packages and starts daemons)" >&2; exit 2; }
        "$1" ;;
    *) echo "slurm_cluster: error: command '${1:-}' is not one of: up, down, status" >&2; exit 2 ;;
esac
