//! Runs the rstream suite (`tests/rabbitmq/`, pytest driving the `rstream` Python client)
//! against real ringbroker processes: one with a plain RabbitMQ listener and one whose
//! listeners are all TLS (a CA and server certificate made here with rcgen). The suite gets the
//! addresses, credentials and CA file through `RMQ_*` environment variables and `RMQ_STRICT=1`,
//! so a test it would skip for a missing feature fails instead. A pytest failure fails this
//! test with pytest's output.
//!
//! Without python3, rstream or pytest the test prints how to install them and passes, except
//! under `CI=true`, where that is a failure: `.ci/run` installs them.

mod common;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The versions `.ci/run` installs (and the suite was validated with).
const RSTREAM_VERSION: &str = "1.1.1";
const PYTEST_VERSION: &str = "9.2.0";
/// Bound of the whole pytest run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn python_has_rstream_and_pytest() -> bool {
    Command::new("python3")
        .args(["-c", "import rstream, pytest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A CA and a server certificate for localhost and 127.0.0.1 it issued, written as PEM files.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certificates() -> Certificates {
    let dir = tempfile::Builder::new().prefix("ringbroker-rmq-tls-").tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ringbroker rstream test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = CertificateParams::new(names).expect("server params");
    params.distinguished_name.push(DnType::CommonName, "ringbroker rstream test server");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("sign server certificate");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    Certificates {
        ca: write("ca.pem", &ca.pem()),
        cert: write("server.pem", &cert.pem()),
        key: write("server.key", &key.serialize_pem()),
        _dir: dir,
    }
}

/// A broker whose listeners are all TLS; returns it and its RabbitMQ port. Ready once the
/// RabbitMQ port accepts connections (a plain ping cannot reach a TLS listener).
fn start_tls_broker(certificates: &Certificates) -> (common::Broker, u16) {
    let (mut flags, port) = rabbitmq::listener_flags(2);
    flags.extend([
        "--tls-cert".to_string(),
        certificates.cert.display().to_string(),
        "--tls-key".to_string(),
        certificates.key.display().to_string(),
    ]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let rabbit = SocketAddr::from(([127, 0, 0, 1], port));
    let accepts = |_: SocketAddr| TcpStream::connect_timeout(&rabbit, Duration::from_secs(1)).is_ok();
    (common::Broker::start_ready_when(2, &args, &accepts), port)
}

/// Runs pytest on `tests/rabbitmq` with `env`, bounded by [`SUITE_TIMEOUT`]; (success, output).
fn pytest(env: &[(&str, String)], output_dir: &Path) -> (bool, String) {
    let out_path = output_dir.join("pytest.out");
    let out = File::create(&out_path).expect("pytest output file");
    let err = out.try_clone().expect("pytest output file");
    let mut command = Command::new("python3");
    command
        .args(["-m", "pytest", "tests/rabbitmq", "-q", "-p", "no:cacheprovider", "-rfEs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("RMQ_SKIP")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run python3 -m pytest");
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(status) => (status.success(), format!("pytest exited with {status}\n{output}")),
        None => (false, format!("pytest did not finish within {SUITE_TIMEOUT:?}\n{output}")),
    }
}

#[test]
fn rstream_suite_against_ringbroker() {
    if !python_has_rstream_and_pytest() {
        let install = format!("python3 -m pip install rstream=={RSTREAM_VERSION} pytest=={PYTEST_VERSION}");
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("rstream/pytest missing under CI=true (.ci/run installs them): {install}");
        }
        println!("SKIP: rstream/pytest missing; install with: {install}");
        return;
    }
    let plain = rabbitmq::server(2, &[]);
    assert!(plain.broker.is_some(), "the rstream runner starts its own broker (unset RMQ_EXTERNAL)");
    let certificates = certificates();
    let (_tls_broker, tls_port) = start_tls_broker(&certificates);
    let env = [
        ("RMQ_HOST", plain.host.clone()),
        ("RMQ_PORT", plain.port.to_string()),
        ("RMQ_USER", plain.user.clone()),
        ("RMQ_PASSWORD", plain.password.clone()),
        ("RMQ_TLS_HOST", "127.0.0.1".to_string()),
        ("RMQ_TLS_PORT", tls_port.to_string()),
        ("RMQ_CA_FILE", certificates.ca.display().to_string()),
        ("RMQ_STRICT", "1".to_string()),
    ];
    let scratch = tempfile::Builder::new().prefix("ringbroker-pytest-").tempdir().expect("tempdir");
    let (passed, output) = pytest(&env, scratch.path());
    assert!(passed, "the rstream suite failed against ringbroker:\n{output}");
    println!("{}", output.lines().last().unwrap_or_default());
}
