#!/usr/bin/env bash
# Inspects this host for running ringbroker and prints one line per check:
#   OK      <what>                      nothing to do
#   ADVISE  <what> -> <command to fix>  a recommendation (nothing is changed)
#   INFO    <what>                      facts for reading benchmark results
# Changes nothing, needs no root, takes well under a second. Always exits 0.
# Usage: scripts/check-host.sh [data dir (default ./data)]
# See tuning/bare-metal.md for the reasoning behind every recommendation.
set -euo pipefail
export LC_ALL=C

data_dir=${1:-./data}

ok() { printf 'OK      %s\n' "$*"; }
advise() { printf 'ADVISE  %s\n' "$*"; }
info() { printf 'INFO    %s\n' "$*"; }
read_file() { [[ -r $1 ]] && tr -d '\n' <"$1" 2>/dev/null || true; }
sysctl_value() { read_file "/proc/sys/${1//.//}"; }

# ---------------------------------------------------------------------------------------- cores
ncpu=$(nproc 2>/dev/null || echo 1)
online=$(read_file /sys/devices/system/cpu/online)
info "cores: $ncpu usable by this process (online: ${online:-unknown}); ringbroker runs one shard per --cores entry"
if ((ncpu < 2)); then
    advise "cores: only $ncpu core: shards and clients will share it; benchmark numbers are not representative"
fi

# ------------------------------------------------------------------------------------- governor
governors=()
for file in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    [[ -r $file ]] && governors+=("$(read_file "$file")")
done
if ((${#governors[@]} == 0)); then
    info "cpu governor: no cpufreq interface (virtual machine or fixed frequency); nothing to set"
else
    mapfile -t distinct < <(printf '%s\n' "${governors[@]}" | sort -u)
    if [[ ${#distinct[@]} -eq 1 && ${distinct[0]} == performance ]]; then
        ok "cpu governor: performance on all ${#governors[@]} cpus"
    else
        advise "cpu governor: ${distinct[*]} -> sudo cpupower frequency-set -g performance   (or: echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
    fi
fi

# -------------------------------------------------------------------------- isolation (cmdline)
cmdline=$(read_file /proc/cmdline)
isolcpus=$(grep -o 'isolcpus=[^ ]*' <<<"$cmdline" || true)
nohz=$(grep -o 'nohz_full=[^ ]*' <<<"$cmdline" || true)
# Suggest isolating all but the housekeeping cores (0-1 on 4+ cores, 0 on 2-3 cores).
if ((ncpu >= 4)); then iso="2-$((ncpu - 1))"; elif ((ncpu == 3)); then iso=1-2; elif ((ncpu == 2)); then iso=1; else iso=; fi
if [[ -n $isolcpus ]]; then
    ok "isolcpus: $isolcpus (run ringbroker --cores on exactly these; keep clients and IRQs off them)"
elif [[ -n $iso ]]; then
    advise "isolcpus: not set -> add 'isolcpus=managed_irq,domain,$iso nohz_full=$iso rcu_nocbs=$iso' to GRUB_CMDLINE_LINUX in /etc/default/grub, sudo update-grub, reboot; then ringbroker --cores $iso (dedicated hosts only)"
else
    info "isolcpus: not set; one core only, nothing to isolate"
fi
if [[ -n $nohz ]]; then
    ok "nohz_full: $nohz"
else
    advise "nohz_full: not set -> add nohz_full=<the isolcpus list> (and rcu_nocbs=<same>) to the kernel command line"
fi

# -------------------------------------------------------------------------------------- memlock
memlock=$(ulimit -l)
if [[ $memlock == unlimited ]]; then
    ok "memlock: unlimited"
elif ((memlock >= 65536)); then
    ok "memlock: ${memlock} KiB (enough for --io-memory up to $((memlock / 1024 / ncpu)) MiB per shard on $ncpu shards)"
else
    advise "memlock: ${memlock} KiB; ringbroker shrinks --io-memory to fit -> ulimit -l unlimited (shell), LimitMEMLOCK=infinity (systemd unit), or '* - memlock unlimited' in /etc/security/limits.conf"
fi

# ---------------------------------------------------------------------------- block schedulers
for dir in /sys/block/*; do
    name=${dir##*/}
    [[ $name == loop* || $name == ram* || $name == zram* || $name == dm-* || $name == sr* ]] && continue
    file=$dir/queue/scheduler
    [[ -r $file ]] || continue
    current=$(grep -o '\[[^]]*\]' "$file" | tr -d '[]' || true)
    if [[ $name == nvme* || $name == vd* || $name == xvd* ]] || [[ $(read_file "$dir/queue/rotational") == 0 ]]; then
        if [[ $current == none ]]; then
            ok "scheduler $name: none"
        else
            advise "scheduler $name: $current -> echo none | sudo tee $file   (persist: udev rule ACTION==\"add|change\", KERNEL==\"$name\", ATTR{queue/scheduler}=\"none\")"
        fi
    else
        info "scheduler $name: $current (rotational disk; ringbroker expects NVMe/SSD)"
    fi
done

# ------------------------------------------------------------------------------ data directory
probe=$data_dir
while [[ ! -e $probe && $probe != / && $probe != . ]]; do probe=$(dirname "$probe"); done
[[ -e $probe ]] || probe=.
if [[ $probe != "$data_dir" ]]; then
    info "data dir $data_dir does not exist yet; checking the filesystem of $probe"
fi
if mount_line=$(findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS -T "$probe" 2>/dev/null); then
    read -r target source fstype options <<<"$mount_line"
    case $fstype in
        xfs | ext4) ok "filesystem of $data_dir: $fstype on $source (mounted at $target)" ;;
        tmpfs) advise "filesystem of $data_dir: tmpfs: no O_DIRECT, no durability -> put --data-dir on an XFS or ext4 NVMe filesystem" ;;
        *) advise "filesystem of $data_dir: $fstype on $source -> XFS or ext4 is the tested setup (O_DIRECT, fdatasync)" ;;
    esac
    if [[ ,$options, == *,noatime,* ]]; then
        ok "mount options of $target: noatime"
    else
        advise "mount options of $target: $options -> add noatime (fstab), then sudo mount -o remount,noatime $target"
    fi
    if [[ ,$options, == *,nobarrier,* || ,$options, == *,barrier=0,* ]]; then
        advise "mount options of $target: barriers off: fdatasync no longer guarantees durability on power loss unless the device has power-loss protection -> remove nobarrier/barrier=0"
    fi
else
    info "filesystem of $data_dir: findmnt unavailable; check with: df -T $probe; findmnt -T $probe"
fi

# ------------------------------------------------------------------------------ socket buffers
want=16777216
for key in net.core.rmem_max net.core.wmem_max; do
    value=$(sysctl_value "$key")
    if [[ -z $value ]]; then
        info "$key: not readable"
    elif ((value >= want)); then
        ok "$key: $value"
    else
        advise "$key: $value -> sudo sysctl -w $key=$want   (persist in /etc/sysctl.d/90-ringbroker.conf)"
    fi
done
for key in net.ipv4.tcp_rmem net.ipv4.tcp_wmem; do
    value=$(sysctl_value "$key")
    if [[ -z $value ]]; then
        info "$key: not readable"
        continue
    fi
    read -r _ _ max <<<"$value"
    if ((max >= want)); then
        ok "$key: $value"
    else
        advise "$key: $value -> sudo sysctl -w $key='4096 131072 $want'"
    fi
done

# ------------------------------------------------------------------------------------ busy poll
busy_poll=$(sysctl_value net.core.busy_poll)
busy_read=$(sysctl_value net.core.busy_read)
if [[ -z $busy_poll ]]; then
    info "busy poll: net.core.busy_poll not available"
elif ((busy_poll > 0 && ${busy_read:-0} > 0)); then
    ok "busy poll: busy_poll=$busy_poll busy_read=$busy_read"
else
    advise "busy poll: busy_poll=$busy_poll busy_read=${busy_read:-?} (off; fine for loopback and throughput) -> for NIC latency on dedicated cores: sudo sysctl -w net.core.busy_poll=50 net.core.busy_read=50"
fi

# ---------------------------------------------------------------------- transparent hugepages
thp=$(read_file /sys/kernel/mm/transparent_hugepage/enabled)
if [[ -z $thp ]]; then
    info "transparent hugepages: not available"
else
    thp_mode=$(grep -o '\[[^]]*\]' <<<"$thp" | tr -d '[]' || true)
    thp_defrag=$(read_file /sys/kernel/mm/transparent_hugepage/defrag)
    thp_defrag=$(grep -o '\[[^]]*\]' <<<"$thp_defrag" | tr -d '[]' || true)
    if [[ $thp_mode == always && $thp_defrag == always ]]; then
        advise "transparent hugepages: enabled=always defrag=always: synchronous compaction stalls -> echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/defrag"
    else
        ok "transparent hugepages: enabled=$thp_mode defrag=${thp_defrag:-?}"
    fi
fi

# ---------------------------------------------------------------------------------------- io_uring
kernel=$(uname -r)
IFS=.- read -r major minor _ <<<"$kernel"
if ((major > 5 || (major == 5 && minor >= 8))); then
    ok "kernel $kernel: io_uring features glommio needs (5.8+)"
else
    advise "kernel $kernel: older than 5.8; glommio's io_uring use needs 5.8+ -> upgrade the kernel"
fi
disabled=$(read_file /proc/sys/kernel/io_uring_disabled)
case ${disabled:-absent} in
    absent) ok "io_uring: no kernel.io_uring_disabled knob (enabled)" ;;
    0) ok "io_uring: kernel.io_uring_disabled=0" ;;
    1) advise "io_uring: kernel.io_uring_disabled=1 (only group kernel.io_uring_group may use it) -> run ringbroker in that group or: sudo sysctl -w kernel.io_uring_disabled=0" ;;
    *) advise "io_uring: kernel.io_uring_disabled=$disabled (disabled for everyone) -> sudo sysctl -w kernel.io_uring_disabled=0" ;;
esac

exit 0
