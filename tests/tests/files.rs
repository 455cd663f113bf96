//! What the backend creates on the host: its socket, the pid file and the pcap file are
//! readable by their owner only (the pcap holds all the guest's traffic; whoever connects to
//! the socket gets a guest's network), and the two files are never written through a symbolic
//! link, as passt opens its output files. No QEMU involved.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use vnu_tests::{Backend, TempDir, run_backend_to_exit};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_socket_pid_file_and_pcap_are_created_for_their_owner_only() {
    let dir = TempDir::new("files").unwrap();
    let (pcap, pid) = (dir.join("all.pcap"), dir.join("backend.pid"));
    // One that exists already, readable by all, as a careless earlier run could leave it.
    std::fs::write(&pcap, b"old").unwrap();
    std::fs::set_permissions(&pcap, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pcap_arg = pcap.display().to_string();
    let pid_arg = pid.display().to_string();
    let backend = Backend::start(&["--pcap", &pcap_arg, "--pid-file", &pid_arg]).unwrap();
    assert_eq!(mode(backend.socket()), 0o600, "socket");
    assert_eq!(mode(&pcap), 0o600, "pcap");
    assert_eq!(mode(&pid), 0o600, "pid file");
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap().trim(),
        backend.pid().to_string()
    );
}

#[test]
fn socket_mode_and_group_are_as_asked() {
    let backend = Backend::start(&["--socket-mode", "0660", "--socket-group", "4321"]).unwrap();
    let meta = std::fs::symlink_metadata(backend.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 4321);
}

/// Refused configurations: one line naming the value, exit status 2.
fn refused(args: &[&str], names: &str) {
    let run = run_backend_to_exit(args, Duration::from_secs(10)).expect("running the backend");
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(2),
        "{args:?}: {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {run:?}");
    assert!(lines[0].contains(names), "{args:?}: {run:?}");
}

#[test]
fn pcap_and_pid_file_are_never_written_through_a_symbolic_link() {
    let dir = TempDir::new("links").unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"the victim's data").unwrap();
    let victim_mode = mode(&victim);
    let socket = dir.join("vu.sock").display().to_string();
    for flag in ["--pcap", "--pid-file"] {
        let link = dir.join(&format!("link{flag}"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let link = link.display().to_string();
        refused(
            &["--socket-path", &socket, flag, &link],
            &format!("{flag} {link}"),
        );
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"the victim's data",
            "{flag}"
        );
        assert_eq!(mode(&victim), victim_mode, "{flag}: the victim's mode kept");
    }
}

#[test]
fn an_unknown_socket_group_is_refused() {
    let dir = TempDir::new("group").unwrap();
    let socket = dir.join("vu.sock").display().to_string();
    refused(
        &[
            "--socket-path",
            &socket,
            "--socket-group",
            "vnu-no-such-group",
        ],
        "--socket-group vnu-no-such-group",
    );
}
