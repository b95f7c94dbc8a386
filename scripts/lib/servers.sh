# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/compare.sh (sourced, not run): free loopback ports and
# waiting for a freshly started server to accept. The caller defines `log`.

# True when nothing listens on or connects from TCP port $1.
port_free() { ! ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }

# A base port with base..base+$1 all free (a listener and one direct port per shard).
free_port_block() {
    local need=$1 base i ok
    for _ in $(seq 200); do
        base=$((20000 + RANDOM % 30000))
        ok=1
        for ((i = 0; i <= need; i++)); do port_free $((base + i)) || { ok=0; break; }; done
        ((ok)) && { echo "$base"; return 0; }
    done
    return 1
}

# Waits up to $5 seconds for process $1 to accept on 127.0.0.1:$2; $3 names it and $4 is its log
# (for the messages). 0 once it accepts; 1 if it exited (reaped) or did not accept in time.
wait_accepting_on() {
    local pid=$1 port=$2 what=$3 logfile=$4 seconds=$5 i
    for ((i = 1; i <= seconds * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            log "   $what exited during start-up (see $logfile)"
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "   $what pid $pid accepting on 127.0.0.1:$port after $((i * 100)) ms"
            return 0
        fi
        sleep 0.1
    done
    log "   $what did not accept within $seconds s (see $logfile)"
    return 1
}
