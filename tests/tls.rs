//! TLS against the real `ringbroker` binary: a CA and a server certificate made at test time
//! (rcgen), the broker started with `--tls-cert` / `--tls-key`, and the SDK connecting with
//! `?tls=true&ca=...` — on the shared listener and, through the router, on the per-shard direct
//! ports. Clients that speak plain TCP or trust another CA fail quickly and cleanly, and the
//! broker keeps serving good clients. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringbroker::client::{Client, ClientError, ConnectionString, ShardRouter};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::{Partitioning, PollRequest, PollStrategy, PollTarget};

const STREAM: &str = "secure";
const TOPIC: &str = "events";
/// How long a client that cannot succeed may take to fail.
const FAIL_WITHIN: Duration = Duration::from_secs(10);

/// A certificate authority made for one test.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Authority { params, key: KeyPair::generate().expect("CA key") }
    }

    fn pem(&self) -> String {
        self.params.clone().self_signed(&self.key).expect("self-sign CA").pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, in PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let issuer = self.params.clone().self_signed(&self.key).expect("CA certificate");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "ringbroker test server");
        let key = KeyPair::generate().expect("server key");
        let certificate = params.signed_by(&key, &issuer, &self.key).expect("sign server certificate");
        (certificate.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

/// The files of one test: a CA, a server certificate it issued, and a CA nobody trusts.
struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::Builder::new().prefix("ringbroker-tls-").tempdir().expect("tempdir");
    let authority = Authority::new("ringbroker test CA");
    let (cert, key) = authority.issue(&["localhost", "127.0.0.1"]);
    Files {
        ca: write(dir.path(), "ca.pem", &authority.pem()),
        other_ca: write(dir.path(), "other-ca.pem", &Authority::new("someone else").pem()),
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server.key", &key),
        _dir: dir,
    }
}

fn url(address: SocketAddr, query: &str) -> ConnectionString {
    format!("ringbroker://ringbroker:ringbroker@{address}?{query}").parse().expect("connection string")
}

/// Connects within [`FAIL_WITHIN`]; panics if the attempt hangs.
async fn connect(target: &ConnectionString) -> Result<Client, ClientError> {
    tokio::time::timeout(FAIL_WITHIN, Client::connect(target)).await.expect("connect must not hang")
}

fn start_tls_broker(files: &Files) -> common::Broker {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ca = files.ca.display().to_string();
    let probe = |address: SocketAddr| {
        let target = url(address, &format!("tls=true&ca={ca}&timeout_ms=2000"));
        runtime.block_on(async { Client::connect(&target).await.is_ok() })
    };
    let cert = files.cert.display().to_string();
    let key = files.key.display().to_string();
    common::Broker::start_ready_when(2, &["--fsync", "never", "--tls-cert", &cert, "--tls-key", &key], &probe)
}

fn batch(tag: &str, count: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    for i in 0..count {
        builder.push_payload(format!("{tag}-{i}").as_bytes()).expect("push");
    }
    builder.finish().expect("finish")
}

fn poll_request(partition: u32) -> PollRequest {
    PollRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        target: PollTarget::Partition(ringbroker::protocol::messages::PartitionTarget {
            partition,
            consumer: "tls-test".into(),
        }),
        strategy: PollStrategy::First,
        max_messages: 100,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        auto_commit: false,
        filter: Vec::new(),
        match_unfiltered: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_and_plain_or_untrusting_clients_fail_cleanly() {
    let files = files();
    let broker = tokio::task::block_in_place(|| start_tls_broker(&files));
    let ca = files.ca.display().to_string();
    let good_url = url(broker.addr(), &format!("tls=true&ca={ca}"));

    // Produce and poll over TLS on the shared listener.
    let client = connect(&good_url).await.expect("TLS client");
    client.create_stream(STREAM, false).await.expect("create stream");
    let config = ringbroker::protocol::messages::TopicConfig { partitions: 4, ..Default::default() };
    client.create_topic(STREAM, TOPIC, config, false).await.expect("create topic");
    for partition in 0..4 {
        let first = batch(&format!("p{partition}"), 3);
        client
            .produce(STREAM, TOPIC, Partitioning::Partition(partition), &[&first])
            .await
            .expect("produce over TLS");
    }
    let polled = client.poll(&poll_request(2)).await.expect("poll over TLS");
    let payloads: Vec<String> = polled
        .records()
        .map(|record| String::from_utf8_lossy(record.expect("record").record.payload).into_owned())
        .collect();
    assert_eq!(payloads, vec!["p2-0", "p2-1", "p2-2"]);

    // Shard-direct connections inherit TLS: the router reaches every owner on its own port.
    let router = ShardRouter::new(client.clone()).await.expect("router");
    for partition in 0..4 {
        let direct = router.client_for(STREAM, TOPIC, partition).await.expect("owner client");
        let owner = router.owner(STREAM, TOPIC, partition).expect("owner");
        assert_eq!(
            direct.connection_string().port,
            broker.shard_addr(owner).port(),
            "partition {partition} goes straight to shard {owner} over TLS"
        );
        let polled = direct.poll(&poll_request(partition)).await.expect("poll on the owner");
        assert_eq!(polled.records().count(), 3);
    }
    let direct = client.connect_to_shard(1).await.expect("connect_to_shard over TLS");
    direct.ping().await.expect("ping shard 1");

    // A plain-TCP client on the TLS port fails, quickly, with an error.
    let started = Instant::now();
    let plain = url(broker.addr(), "timeout_ms=3000&reconnect_retries=0");
    let error = connect(&plain).await.expect_err("plain TCP against TLS");
    assert!(error.is_connection_error() || matches!(error, ClientError::Protocol(_)), "{error:?}");
    assert!(started.elapsed() < FAIL_WITHIN, "failed in {:?}", started.elapsed());

    // The raw socket view: the server answers a plain frame with a TLS alert or nothing, then
    // closes (EOF), well within the read timeout.
    let mut raw = common::Conn::connect(broker.addr()).expect("tcp connect");
    raw.stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = raw.ping().expect_err("no frame comes back from a TLS port");
    let mut rest = Vec::new();
    use std::io::Read;
    let end = raw.stream.read_to_end(&mut rest);
    assert!(
        end.is_ok() || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed, not timed out: {end:?}"
    );

    // A client trusting another CA fails with a certificate error.
    let other = url(broker.addr(), &format!("tls=true&ca={}&reconnect_retries=0", files.other_ca.display()));
    let error = connect(&other).await.expect_err("untrusted certificate");
    assert!(error.to_string().contains("certificate"), "{error}");

    // A name the certificate does not carry fails the same way.
    let wrong_name = url(broker.addr(), &format!("tls=true&ca={ca}&tls_domain=elsewhere.example"));
    let error = connect(&wrong_name).await.expect_err("wrong server name");
    assert!(error.to_string().contains("certificate"), "{error}");

    // A missing CA file is a clear local error.
    let missing = url(broker.addr(), "tls=true&ca=/nonexistent/ca.pem");
    let error = connect(&missing).await.expect_err("missing CA file");
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

    // The good client (and a new one) are still served.
    client.ping().await.expect("still served");
    let again = connect(&good_url).await.expect("a new TLS client");
    let second = batch("after", 1);
    let ack = again.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&second]).await.expect("produce");
    assert_eq!(ack.acks[0].base_offset, 3);
}

#[test]
fn ringctl_speaks_tls_through_its_url() {
    let files = files();
    let broker = start_tls_broker(&files);
    let target =
        format!("ringbroker://ringbroker:ringbroker@{}?tls=true&ca={}", broker.addr(), files.ca.display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .args(["--url", &target, "ping"])
        .output()
        .expect("run ringctl");
    assert!(output.status.success(), "ringctl ping over TLS: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("pong"));
}

#[test]
fn the_broker_refuses_a_bad_key_or_a_lone_certificate() {
    let files = files();
    let run = |args: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::process::Command::new(env!("CARGO_BIN_EXE_ringbroker"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--io-memory", "2097152"])
            .args(args)
            .output()
            .expect("run ringbroker")
    };
    let cert = files.cert.display().to_string();
    let output = run(&["--tls-cert", &cert]);
    assert!(!output.status.success(), "a certificate without a key is refused");
    let ca = files.ca.display().to_string();
    let output = run(&["--tls-cert", &cert, "--tls-key", &ca]);
    assert!(!output.status.success(), "a certificate file is no key");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
