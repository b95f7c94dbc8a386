//! Runs the kafka-python suite (`tests/kafka/`, pytest driving kafka-python 3.0.12) against a
//! ringbroker of two shards with its Kafka listener: an idempotent producer with headers and
//! timestamps read back exactly once, a consumer group of two members splitting 4 partitions
//! and one taking over from the other's commits, `seek_to_beginning` / `seek` / offsets by time,
//! the admin client creating and deleting topics, and SASL PLAIN with right and wrong passwords.
//! The suite gets the bootstrap address and credentials through `KAFKA_*` environment variables
//! and `KAFKA_STRICT=1`, so a test it would skip fails instead. A pytest failure fails this test
//! with pytest's output. `KAFKA_PYTEST_ARGS` (whitespace-separated) is passed on to pytest, e.g.
//! `-k seek` to run a part.
//!
//! Without python3, kafka-python or pytest the test prints how to install them and passes,
//! except under `CI=true`, where that is a failure: `.ci/run` installs them.

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The versions `.ci/run` installs (and the suite was validated with).
const KAFKA_PYTHON_VERSION: &str = "3.0.12";
const PYTEST_VERSION: &str = "9.2.0";
/// Bound of the whole pytest run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn python_has_kafka_and_pytest() -> bool {
    let check = format!(
        "import importlib.metadata as m, sys, pytest, kafka; \
         sys.exit(m.version('kafka-python') != '{KAFKA_PYTHON_VERSION}')"
    );
    kafka::runs("python3", &["-c", &check])
}

/// Runs pytest on `tests/kafka` with `env`, bounded by [`SUITE_TIMEOUT`]; (success, output).
fn pytest(env: &[(&str, String)], output_dir: &Path) -> (bool, String) {
    let out_path = output_dir.join("pytest.out");
    let out = File::create(&out_path).expect("pytest output file");
    let err = out.try_clone().expect("pytest output file");
    let selection = std::env::var("KAFKA_PYTEST_K").ok().filter(|k| !k.is_empty());
    let mut command = Command::new("python3");
    command
        .args(["-m", "pytest", "tests/kafka", "-q", "-p", "no:cacheprovider", "-rfEs"])
        // kafka-python 3.0.12 loads its schemas with importlib APIs Python 3.11 deprecates.
        .args(["-W", "ignore::DeprecationWarning"])
        .args(selection.iter().flat_map(|k| ["-k", k.as_str()]))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run python3 -m pytest");
    let status = kafka::wait_or_kill(&mut child, SUITE_TIMEOUT);
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(status) => (status.success(), format!("pytest exited with {status}\n{output}")),
        None => (false, format!("pytest did not finish within {SUITE_TIMEOUT:?}\n{output}")),
    }
}

#[test]
fn kafka_python_suite_against_ringbroker() {
    if !python_has_kafka_and_pytest() {
        let install =
            format!("python3 -m pip install kafka-python=={KAFKA_PYTHON_VERSION} pytest=={PYTEST_VERSION}");
        kafka::skip_missing("kafka-python/pytest", &install);
        return;
    }
    let mut server = kafka::server(2, &[]);
    let env = [
        ("KAFKA_BOOTSTRAP", server.bootstrap()),
        ("KAFKA_USER", "ringbroker".to_string()),
        ("KAFKA_PASSWORD", "ringbroker".to_string()),
        ("KAFKA_SASL", "1".to_string()),
        ("KAFKA_STRICT", "1".to_string()),
    ];
    let scratch = tempfile::Builder::new().prefix("ringbroker-kafka-pytest-").tempdir().expect("tempdir");
    let (passed, output) = pytest(&env, scratch.path());
    server.assert_running();
    assert!(passed, "the kafka-python suite failed against ringbroker:\n{output}");
    println!("{}", output.lines().last().unwrap_or_default());
}
