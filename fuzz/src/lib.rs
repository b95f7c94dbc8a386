//! Fuzzing harnesses of ringbroker, one per cargo-fuzz target, kept in a library so the
//! targets are one line each and the stable-toolchain tests below can replay any input.
//!
//! What it owns: the input layout of each target (documented in its module), the properties
//! checked on every input (a broken one panics, which libFuzzer reports as a crash), and the seed
//! corpus ([`seeds`]). Targets: `frame_decode` ([`frame`]), `batch_validate` ([`batch`]),
//! `metadata_replay` and `segment_recovery` ([`storage`]).
//!
//! Invariants: every harness accepts any byte string; the pure decoders are called on the bytes
//! exactly as a peer or a disk could present them; the storage harnesses go through the same
//! public entry points the broker calls on start-up. Run them with `scripts/fuzz.sh`
//! (`docs/fuzzing.md`).

pub mod batch;
pub mod frame;
pub mod seeds;
pub mod storage;

/// Runs `data` through the harness of `target`.
///
/// # Panics
/// On an unknown target name, or when the input breaks a property (that is the point).
pub fn run(target: &str, data: &[u8]) {
    match target {
        "frame_decode" => frame::run(data),
        "batch_validate" => batch::run(data),
        "metadata_replay" => drop(storage::metadata_replay(data)),
        "segment_recovery" => drop(storage::segment_recovery(data)),
        other => panic!("unknown fuzz target {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
    }

    /// The checked-in seeds equal what [`crate::seeds`] builds; `RINGBROKER_WRITE_SEEDS=1`
    /// (re)writes them instead.
    #[test]
    fn seed_corpus_is_current() {
        let write = std::env::var_os("RINGBROKER_WRITE_SEEDS").is_some();
        let mut total = 0;
        for (target, name, bytes) in crate::seeds::all() {
            let path = corpus_dir(target).join(&name);
            total += bytes.len();
            if write {
                std::fs::create_dir_all(corpus_dir(target)).expect("create the corpus directory");
                std::fs::write(&path, &bytes).expect("write a seed");
            } else {
                let stored = std::fs::read(&path).unwrap_or_default();
                assert!(stored == bytes, "{} is stale; rerun with RINGBROKER_WRITE_SEEDS=1", path.display());
            }
        }
        assert!(total < 200 * 1024, "seed corpus of {total} bytes is too large");
    }

    /// Every file of the checked-in corpus (seeds and kept findings) passes its harness.
    #[test]
    fn checked_in_corpus_passes() {
        for target in crate::seeds::TARGETS {
            let Ok(entries) = std::fs::read_dir(corpus_dir(target)) else { continue };
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let bytes = std::fs::read(&path).expect("read a corpus file");
                crate::run(target, &bytes);
            }
        }
    }

    /// The seeds reach the interesting paths: frames and batches decode, the metadata ops
    /// replay into a catalog, the partition log opens without repairs.
    #[test]
    fn seeds_are_valid_inputs() {
        use ringbroker::protocol::batch::validate;
        use ringbroker::protocol::frame::FrameHeader;
        for (target, name, bytes) in crate::seeds::all() {
            match target {
                "frame_decode" => {
                    assert!(FrameHeader::decode(&bytes[2..], usize::MAX).is_ok(), "{name}");
                }
                "batch_validate" if name.contains("every-part") || name.contains("payload") => {
                    assert!(validate(&bytes[1..]).is_ok(), "{name}");
                }
                "metadata_replay" if name.ends_with("ops") || name.ends_with("raw-log") => {
                    assert_eq!(crate::storage::metadata_replay(&bytes), Some(6), "{name}");
                }
                "segment_recovery" => {
                    let (offsets, repairs) = crate::storage::segment_recovery(&bytes).expect(&name);
                    assert!(offsets.dirty_next > offsets.start, "{name}: {offsets:?}");
                    let clean = name.ends_with("clean") || name.ends_with("base-5000");
                    assert!(!clean || repairs == 0, "{name}: {repairs} repairs");
                }
                _ => {}
            }
            crate::run(target, &bytes);
        }
    }
}
