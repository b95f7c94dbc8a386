# shellcheck shell=bash
# shellcheck disable=SC2154 # work, out and broker_bin are the caller's
# Sourced by scripts/rabbitmq-bench.sh (after scripts/lib/servers.sh): start and stop a fresh
# RabbitMQ node and a fresh ringbroker with its RabbitMQ Streams listener, each on free loopback
# ports and an empty data directory under $work. The caller defines `log`, $work, $out (logs go
# to $out/logs), $broker_bin.
#
# The RabbitMQ node is the script's own (node name rmqbench<pid>@localhost, its own config,
# plugins file, data and log directories, run as the rabbitmq user as Debian's wrapper does):
# the system's /etc/rabbitmq and /var/lib/rabbitmq data are neither read nor changed, except
# the Erlang cookie in the rabbitmq user's home.

rabbitmq_pid=
rabbitmq_launcher=
rabbitmq_port=
rabbitmq_dir=

# $1 = name for the logs. Sets rabbitmq_port (streams) and rabbitmq_pid (beam.smp).
start_rabbitmq() {
    local base node
    base=$(free_port_block 3) || { log "no free ports"; return 1; }
    rabbitmq_port=$base
    rabbitmq_dir=$(mktemp -d "$work/rabbitmq-$1.XXXXXX")
    node=rmqbench$$@localhost
    # Stream listener and AMQP listener on loopback; the stream address advertised to clients is
    # the one they connected to (clients reconnect to the advertised leader).
    cat >"$rabbitmq_dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((base + 1))
stream.listeners.tcp.1 = 127.0.0.1:$base
stream.advertised_host = 127.0.0.1
stream.advertised_port = $base
EOF
    echo '[rabbitmq_stream].' >"$rabbitmq_dir/enabled_plugins"
    : >"$rabbitmq_dir/rabbitmq-env.conf"
    chown -R rabbitmq:rabbitmq "$rabbitmq_dir"
    chmod 755 "$rabbitmq_dir"
    su rabbitmq -s /bin/sh -c "exec env HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=$node \
        RABBITMQ_CONF_ENV_FILE=$rabbitmq_dir/rabbitmq-env.conf \
        RABBITMQ_CONFIG_FILE=$rabbitmq_dir/rabbitmq.conf \
        RABBITMQ_ENABLED_PLUGINS_FILE=$rabbitmq_dir/enabled_plugins \
        RABBITMQ_MNESIA_BASE=$rabbitmq_dir/mnesia RABBITMQ_LOG_BASE=$rabbitmq_dir/log \
        RABBITMQ_PID_FILE=$rabbitmq_dir/pid RABBITMQ_NODE_PORT=$((base + 1)) \
        RABBITMQ_DIST_PORT=$((base + 2)) /usr/lib/rabbitmq/bin/rabbitmq-server" \
        >"$out/logs/$1.rabbitmq.log" 2>&1 &
    rabbitmq_launcher=$!
    if ! wait_accepting_on "$rabbitmq_launcher" "$rabbitmq_port" "RabbitMQ $1" "$out/logs/$1.rabbitmq.log" 90; then
        return 1
    fi
    # The node writes its operating-system pid (beam.smp's) to RABBITMQ_PID_FILE as it boots.
    rabbitmq_pid=$(cat "$rabbitmq_dir/pid" 2>/dev/null) || true
    if ! [[ $rabbitmq_pid =~ ^[0-9]+$ ]] || [[ $(cat "/proc/$rabbitmq_pid/comm" 2>/dev/null) != beam.smp ]]; then
        log "   RabbitMQ $1: no beam.smp pid in $rabbitmq_dir/pid"
        rabbitmq_pid=''
        return 1
    fi
    log "   RabbitMQ $1: beam.smp pid $rabbitmq_pid, streams on 127.0.0.1:$rabbitmq_port"
}

# Stops the node started last (SIGTERM: the Erlang VM shuts down cleanly), removes its directory.
stop_rabbitmq() {
    local pid=${rabbitmq_pid:-}
    if [[ -z $pid && -n $rabbitmq_dir ]]; then pid=$(cat "$rabbitmq_dir/pid" 2>/dev/null) || true; fi
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == beam.smp ]] || pid=''
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [[ -n $rabbitmq_launcher ]]; then
        kill -TERM "$rabbitmq_launcher" 2>/dev/null || true
        wait "$rabbitmq_launcher" 2>/dev/null || true
    fi
    [[ -n $rabbitmq_dir ]] && rm -rf "$rabbitmq_dir"
    rabbitmq_pid='' rabbitmq_launcher='' rabbitmq_dir=''
}

ringbroker_pid=
ringbroker_port=
ringbroker_rabbitmq_port=
ringbroker_data=

# $1 = name for the logs, $2 = --fsync policy. Sets ringbroker_port (native),
# ringbroker_rabbitmq_port (RabbitMQ Streams; the shards' ports follow it) and ringbroker_pid.
start_ringbroker() {
    local shards
    shards=$(nproc)
    ringbroker_port=$(free_port_block "$((2 * shards + 1))") || { log "no free ports"; return 1; }
    ringbroker_rabbitmq_port=$((ringbroker_port + shards + 1))
    ringbroker_data=$(mktemp -d "$work/ringbroker-$1.XXXXXX")
    "$broker_bin" --data-dir "$ringbroker_data" --listen "127.0.0.1:$ringbroker_port" \
        --rabbitmq-listen "127.0.0.1:$ringbroker_rabbitmq_port" --fsync "$2" \
        >"$out/logs/$1.ringbroker.log" 2>&1 &
    ringbroker_pid=$!
    wait_accepting_on "$ringbroker_pid" "$ringbroker_port" "ringbroker $1" "$out/logs/$1.ringbroker.log" 15 &&
        wait_accepting_on "$ringbroker_pid" "$ringbroker_rabbitmq_port" "its RabbitMQ listener" \
            "$out/logs/$1.ringbroker.log" 5
}

stop_ringbroker() {
    if [[ -n $ringbroker_pid ]]; then
        kill -TERM "$ringbroker_pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$ringbroker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ringbroker_pid" 2>/dev/null || true
        wait "$ringbroker_pid" 2>/dev/null || true
    fi
    [[ -n $ringbroker_data ]] && rm -rf "$ringbroker_data"
    ringbroker_pid='' ringbroker_data=''
}
