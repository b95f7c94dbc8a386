//! `ringctl` with retention and durable consumers, driving the real binary against the real
//! broker: `topic create --retention interest`, `consumer create`, `produce` (with a filter
//! value and a TTL), `topic info --json` figures, `fetch --count` (printed and acknowledged, or
//! not with `--ack none`), `consumer info` and `list`, refusals as one line.

mod common;

use serde_json::Value;

const STREAM: &str = "s";

fn figures(partition: &Value) -> (u64, u64, i64, u64) {
    (
        partition["messages"].as_u64().expect("messages"),
        partition["first_offset"].as_u64().expect("first_offset"),
        partition["last_offset"].as_i64().expect("last_offset"),
        partition["consumer_count"].as_u64().expect("consumer_count"),
    )
}

#[test]
fn ringctl_creates_an_interest_topic_and_a_consumer_fetches_and_acknowledges() {
    let broker = common::Broker::start(2, &[]);
    let ok = |args: &[&str], stdin: &str| {
        let (success, stdout, stderr) = common::ringctl(&broker, args, stdin);
        assert!(success, "ringctl {args:?}: {stderr}");
        stdout
    };
    let info = |topic: &str| -> Value {
        serde_json::from_str(&ok(&["topic", "info", STREAM, topic, "--json"], ""))
            .expect("topic info is JSON")
    };
    ok(&["stream", "create", STREAM], "");
    ok(&["topic", "create", STREAM, "events", "--partitions", "1", "--retention", "interest"], "");
    let shown = ok(&["topic", "get", STREAM, "events"], "");
    assert!(shown.contains("retention: interest"), "{shown}");

    // Without consumers, produced messages are gone at once.
    ok(&["produce", STREAM, "events", "--filter-value", "events.early"], "a\nb\n");
    let state = info("events");
    assert_eq!(state["retention"], "interest");
    assert_eq!(figures(&state["partitions"][0]), (0, 2, 1, 0));
    assert_eq!(state["partitions"][0]["bytes"], 0);

    ok(
        &["consumer", "create", STREAM, "events", "clicks", "--filter", "events.click", "--ack-wait", "30s"],
        "",
    );
    ok(&["consumer", "create", STREAM, "events", "all", "--filter", "events.>", "--max-deliver", "3"], "");
    ok(&["produce", STREAM, "events", "--filter-value", "events.click"], "one\ntwo\nthree\n");
    ok(&["produce", STREAM, "events", "--filter-value", "events.view"], "four\n");
    let state = info("events");
    assert_eq!(figures(&state["partitions"][0]), (4, 2, 5, 2));
    assert_eq!(figures(&state["total"]), (4, 2, 5, 2));
    assert!(state["total"]["bytes"].as_u64().expect("bytes") > 0);
    assert!(state["total"].get("partition").is_none(), "the total has no partition id");
    assert!(state["partitions"][0]["first_timestamp_us"].as_u64().expect("first ts") > 0);
    assert!(state["partitions"][0]["last_timestamp_us"].as_u64().expect("last ts") > 0);
    assert_eq!(state["partitions"][0]["num_deleted"], 0);

    // `clicks` takes two and acknowledges them; `all` reads everything without acknowledging.
    let fetched = ok(&["fetch", STREAM, "events", "clicks", "--count", "2"], "");
    assert_eq!(fetched, "0/2 seq=1 deliveries=1 events.click one\n0/3 seq=2 deliveries=1 events.click two\n");
    let fetched =
        ok(&["fetch", STREAM, "events", "all", "--count", "10", "--ack", "none", "--wait", "200ms"], "");
    assert_eq!(fetched.lines().count(), 4, "{fetched}");
    assert!(fetched.ends_with("0/5 seq=4 deliveries=1 events.view four\n"), "{fetched}");
    assert_eq!(figures(&info("events")["partitions"][0]), (4, 2, 5, 2), "`all` has not acknowledged");

    // `all` takes them again? No: they wait for ack_wait (30 s). `clicks` takes its last one.
    let fetched = ok(&["fetch", STREAM, "events", "all", "--count", "1", "--wait", "0s"], "");
    assert_eq!(fetched, "", "nothing new for `all`");
    let fetched = ok(&["--json", "fetch", STREAM, "events", "clicks", "--count", "5", "--wait", "200ms"], "");
    let line: Value = serde_json::from_str(fetched.trim()).expect("one JSON line");
    assert_eq!((line["offset"].as_u64(), line["payload"].as_str()), (Some(4), Some("three")));

    let described = ok(&["consumer", "info", STREAM, "events", "clicks"], "");
    assert!(described.contains("filter: events.click") && described.contains("ACK-FLOOR"), "{described}");
    let described: Value =
        serde_json::from_str(&ok(&["consumer", "info", STREAM, "events", "all", "--json"], ""))
            .expect("JSON");
    let partition = &described["partitions"][0];
    assert_eq!((partition["ack_pending"].as_u64(), partition["delivered_to"].as_u64()), (Some(4), Some(6)));
    assert_eq!(described["config"]["max_deliver"], 3);
    let listed = ok(&["consumer", "list", STREAM, "events"], "");
    assert!(listed.contains("clicks") && listed.contains("events.>"), "{listed}");

    // Deleting `all` releases what only it held: nothing is left.
    ok(&["consumer", "delete", STREAM, "events", "all"], "");
    assert_eq!(figures(&info("events")["partitions"][0]), (0, 6, 5, 1));

    // Refusals: one line naming the status.
    let (success, _, stderr) = common::ringctl(&broker, &["fetch", STREAM, "events", "nobody"], "");
    assert!(!success && stderr.contains("UnknownConsumer(100)"), "{stderr}");
    let (success, _, stderr) = common::ringctl(&broker, &["produce", STREAM, "events", "--ttl", "5s"], "x\n");
    assert!(!success && stderr.contains("TtlNotAllowed(104)"), "{stderr}");
}

#[test]
fn ringctl_work_queue_limits_and_ttls() {
    let broker = common::Broker::start(2, &[]);
    let ok = |args: &[&str], stdin: &str| {
        let (success, stdout, stderr) = common::ringctl(&broker, args, stdin);
        assert!(success, "ringctl {args:?}: {stderr}");
        stdout
    };
    ok(&["stream", "create", STREAM], "");
    ok(&["topic", "create", STREAM, "jobs", "--partitions", "2", "--retention", "workqueue"], "");
    ok(&["consumer", "create", STREAM, "jobs", "eu", "--filter", "jobs.eu.*"], "");
    let (success, _, stderr) =
        common::ringctl(&broker, &["consumer", "create", STREAM, "jobs", "any", "--filter", "jobs.>"], "");
    assert!(!success && stderr.contains("FilterOverlap(101)"), "{stderr}");
    ok(&["produce", STREAM, "jobs", "--filter-value", "jobs.eu.a"], "1\n2\n3\n4\n");
    let fetched = ok(&["fetch", STREAM, "jobs", "eu", "--count", "4"], "");
    assert_eq!(fetched.lines().count(), 4, "{fetched}");
    let state: Value =
        serde_json::from_str(&ok(&["topic", "info", STREAM, "jobs", "--json"], "")).expect("JSON");
    assert_eq!(state["retention"], "workqueue");
    assert_eq!(state["total"]["messages"], 0);
    assert_eq!(state["partitions"].as_array().map(Vec::len), Some(2));

    // A limit of 2 messages that refuses more; TTLs allowed.
    ok(
        &[
            "topic",
            "create",
            STREAM,
            "small",
            "--partitions",
            "1",
            "--max-messages",
            "2",
            "--discard",
            "new",
            "--allow-ttl",
        ],
        "",
    );
    ok(&["produce", STREAM, "small", "--ttl", "1h"], "a\nb\n");
    let (success, _, stderr) = common::ringctl(&broker, &["produce", STREAM, "small"], "c\n");
    assert!(!success && stderr.contains("TopicFull(103)"), "{stderr}");
    let shown = ok(&["topic", "info", STREAM, "small"], "");
    assert!(shown.contains("max messages 2 (discard new), TTLs allowed"), "{shown}");
    assert!(
        shown.lines().any(|l| l.starts_with("total") && l.split_whitespace().nth(1) == Some("2")),
        "{shown}"
    );
}
