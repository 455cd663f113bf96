//! The committed fuzz corpus (`fuzz/corpus/TARGET/`), replayed through the harnesses on stable:
//! every input a fuzzer once found interesting, crashes it found included, must run clean.

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

fn replay(target: &str) {
    let run = vnu_fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .expect("a known target");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("corpus file");
        // An input that hangs fails the test rather than stalling the suite.
        let (done, finished) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            run(&data);
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => panic!("{target}: {} hangs", file.display()),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                panic!("{target}: {} panicked", file.display());
            }
        }
    }
}

#[test]
fn ring_corpus() {
    replay("ring");
}

#[test]
fn engine_corpus() {
    replay("engine");
}

#[test]
fn dhcp_corpus() {
    replay("dhcp");
}

#[test]
fn dhcpv6_corpus() {
    replay("dhcpv6");
}

#[test]
fn ndp_corpus() {
    replay("ndp");
}

#[test]
fn tftp_corpus() {
    replay("tftp");
}
