#!/usr/bin/env python3
"""One rstream benchmark run against a RabbitMQ Streams server, and the table of many runs.

Used by scripts/rabbitmq-bench.sh (which starts and stops the servers); never by the tests.

`run`: creates a fresh stream, publishes --messages bodies of --message-bytes bytes with
`Producer.send_batch` (--batch messages per call, one Publish frame each; at most --in-flight
batches unconfirmed) and waits until every publishing id is confirmed; then subscribes from the
first offset and waits until every message was delivered. For each phase it prints one JSON line
with the messages, the wall seconds, and the CPU seconds (user + system) of the client (this
process) and of the broker (/proc/<--broker-pid>/stat, every thread) spent in it.

`measure`: runs a command (ringbench) and prints one JSON line with its wall seconds, its CPU
seconds (from its rusage) and the broker's over the same span, so that a native and a RabbitMQ
listener run of ringbench get the same CPU split as the rstream runs.

`table`: reads JSON lines of `run` (and `measure` lines made into the same form by the caller),
each tagged with "server" and "run", and prints a Markdown table of the medians per server and
phase (CPU per message: the median of each run's CPU over its messages), with the ratio of every
server's median to the --baseline server's.

Every wait is bounded (--timeout seconds per phase); a run that fails exits non-zero with one
line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of process `pid` (all its threads), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    # fixed: state is field 3, utime and stime are fields 14 and 15.
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Meter:
    """Wall time and client and broker CPU over one phase."""

    def __init__(self, broker_pid: Optional[int]) -> None:
        self.broker_pid = broker_pid
        self.wall = time.perf_counter()
        self.client = time.process_time()
        self.broker = process_cpu_seconds(broker_pid) if broker_pid else None

    def result(self, phase: str, messages: int, message_bytes: int) -> dict[str, Any]:
        seconds = time.perf_counter() - self.wall
        broker_after = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        broker = None if self.broker is None or broker_after is None else broker_after - self.broker
        return {
            "phase": phase,
            "messages": messages,
            "seconds": seconds,
            "msgs_per_s": messages / seconds if seconds > 0 else 0.0,
            "mb_per_s": messages * message_bytes / seconds / 1e6 if seconds > 0 else 0.0,
            "client_cpu_s": time.process_time() - self.client,
            "broker_cpu_s": broker,
        }


async def wait_for(event: asyncio.Event, seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        raise SystemExit(f"rstream_bench: timed out after {seconds} s waiting for {what}") from None


async def publish(args: argparse.Namespace, connection: dict[str, Any]) -> dict[str, Any]:
    from rstream import ConfirmationStatus, Producer

    rng = random.Random(1)
    # A few distinct bodies, reused: the run measures the client and the broker, not body making.
    bodies = [bytes(rng.getrandbits(8) for _ in range(args.message_bytes)) for _ in range(16)]
    batch = [bodies[i % len(bodies)] for i in range(args.batch)]
    state = {"confirmed": 0, "failed": 0}
    progress = asyncio.Event()
    window = args.in_flight * args.batch

    def on_confirm(status: ConfirmationStatus) -> None:
        if status.is_confirmed:
            state["confirmed"] += 1
        else:
            state["failed"] += 1
        progress.set()

    async with Producer(**connection) as producer:
        await producer.create_stream(args.stream)
        meter = Meter(args.broker_pid)
        sent = 0
        while sent < args.messages:
            while sent - state["confirmed"] - state["failed"] >= window:
                progress.clear()
                await wait_for(progress, args.timeout, "publish confirmations")
            count = min(args.batch, args.messages - sent)
            await producer.send_batch(args.stream, batch[:count], on_publish_confirm=on_confirm)
            sent += count
        while state["confirmed"] + state["failed"] < args.messages:
            progress.clear()
            await wait_for(progress, args.timeout, "the last publish confirmations")
        result = meter.result("publish", args.messages, args.message_bytes)
    if state["failed"]:
        raise SystemExit(f"rstream_bench: {state['failed']} messages were not confirmed")
    return result


async def consume(args: argparse.Namespace, connection: dict[str, Any]) -> dict[str, Any]:
    from rstream import Consumer, ConsumerOffsetSpecification, MessageContext, OffsetType

    state = {"received": 0}
    done = asyncio.Event()

    def on_message(message: bytes, context: MessageContext) -> None:
        state["received"] += 1
        if state["received"] >= args.messages:
            done.set()

    async with Consumer(**connection) as consumer:
        meter = Meter(args.broker_pid)
        await consumer.subscribe(
            args.stream,
            on_message,
            offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
            initial_credit=args.credit,
        )
        await wait_for(done, args.timeout, f"{args.messages} deliveries (have {state['received']})")
        result = meter.result("consume", state["received"], args.message_bytes)
    return result


async def run(args: argparse.Namespace) -> None:
    connection = {"host": args.host, "port": args.port, "username": args.user, "password": args.password}
    for phase in (publish, consume):
        result = await phase(args, connection)
        result.update({"batch": args.batch, "message_bytes": args.message_bytes, "in_flight": args.in_flight})
        result.update({"server": args.server_name, "run": args.run})
        print(json.dumps(result), flush=True)


def measure(args: argparse.Namespace) -> int:
    """Runs `args.argv`; one JSON line: wall, its CPU (rusage), the broker's CPU; its status."""
    import subprocess

    broker_before = process_cpu_seconds(args.broker_pid) if args.broker_pid else None
    started = time.perf_counter()
    child = subprocess.Popen(args.argv)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    broker_after = process_cpu_seconds(args.broker_pid) if args.broker_pid else None
    broker = None if broker_before is None or broker_after is None else broker_after - broker_before
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": seconds, "client_cpu_s": usage.ru_utime + usage.ru_stime,
                      "broker_cpu_s": broker, "status": code}), flush=True)
    return code


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for path in args.results for line in open(path, encoding="utf-8") if line.strip()]
    servers = list(dict.fromkeys(row["server"] for row in rows))
    phases = list(dict.fromkeys(row["phase"] for row in rows))

    def median(values: list[Optional[float]]) -> Optional[float]:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def cell(value: Optional[float], digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    medians: dict[tuple[str, str], dict[str, Any]] = {}
    for server in servers:
        for phase in phases:
            picked = [row for row in rows if row["server"] == server and row["phase"] == phase]
            if not picked:
                continue
            medians[(server, phase)] = {
                "runs": len(picked),
                "each": [row["msgs_per_s"] for row in picked],
                "msgs_per_s": median([row["msgs_per_s"] for row in picked]),
                "seconds": median([row["seconds"] for row in picked]),
                "client_cpu_s": median([row["client_cpu_s"] for row in picked]),
                "broker_cpu_s": median([row["broker_cpu_s"] for row in picked]),
                "broker_us_per_message": median([
                    row["broker_cpu_s"] / row["messages"] * 1e6
                    if row["broker_cpu_s"] is not None and row["messages"] else None
                    for row in picked
                ]),
                "client_us_per_message": median([
                    row["client_cpu_s"] / row["messages"] * 1e6 if row["messages"] else None for row in picked
                ]),
            }
    baseline = args.baseline or servers[0]
    print("| phase | server | runs | msg/s each run (M) | median M msg/s | vs " + baseline
          + " | wall s | client CPU s | broker CPU s | client CPU µs/msg | broker CPU µs/msg |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for phase in phases:
        base = medians.get((baseline, phase))
        for server in servers:
            m = medians.get((server, phase))
            if m is None:
                continue
            ratio = None
            if base and base["msgs_per_s"] and m["msgs_per_s"] is not None:
                ratio = m["msgs_per_s"] / base["msgs_per_s"]
            each = ", ".join(f"{v / 1e6:.3f}" for v in m["each"])
            print(f"| {phase} | {server} | {m['runs']} | {each} | {cell(m['msgs_per_s'] / 1e6, 3)} | "
                  f"{cell(ratio)}× | {cell(m['seconds'])} | {cell(m['client_cpu_s'])} | "
                  f"{cell(m['broker_cpu_s'])} | {cell(m['client_us_per_message'])} | "
                  f"{cell(m['broker_us_per_message'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    one = commands.add_parser("run", help="one publish + consume run; JSON lines on stdout")
    one.add_argument("--host", default="127.0.0.1")
    one.add_argument("--port", type=int, default=5552)
    one.add_argument("--user", default="guest")
    one.add_argument("--password", default=os.environ.get("RSTREAM_BENCH_PASSWORD", "guest"))
    one.add_argument("--stream", default="rstream-bench")
    one.add_argument("--messages", type=int, default=3_000_000)
    one.add_argument("--message-bytes", type=int, default=100)
    one.add_argument("--batch", type=int, default=1000, help="messages per send_batch call")
    one.add_argument("--in-flight", type=int, default=64, help="batches unconfirmed at most")
    one.add_argument("--credit", type=int, default=10, help="the consumer's initial credit (chunks)")
    one.add_argument("--broker-pid", type=int, help="process whose CPU time is reported")
    one.add_argument("--timeout", type=float, default=60.0, help="bound of each wait, seconds")
    one.add_argument("--server-name", default="server", help="tag of the output lines")
    one.add_argument("--run", type=int, default=1, help="tag of the output lines")
    timed = commands.add_parser("measure", help="run a command; JSON line with its and the broker's CPU")
    timed.add_argument("--broker-pid", type=int)
    timed.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    summary = commands.add_parser("table", help="Markdown table of medians from JSON-line files")
    summary.add_argument("results", nargs="+")
    summary.add_argument("--baseline", help="the server the ratios are against (default: the first)")
    args = parser.parse_args()
    if args.action == "table":
        table(args)
        return
    if args.action == "measure":
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not args.argv:
            parser.error("measure needs a command")
        sys.exit(1 if measure(args) else 0)
    for name in ("messages", "message_bytes", "batch", "in_flight", "credit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch * (args.message_bytes + 16) > 1_000_000:
        parser.error("a batch must fit in one 1 MiB frame: lower --batch or --message-bytes")
    try:
        asyncio.run(run(args))
    except SystemExit as error:
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
