//! The guest forwards' launcher as a confined backend uses it: forked from a process with one
//! thread (so this test has its own `main`, without the test harness's threads), it confines
//! itself as told, keeps only its standard streams and its socket, and starts the plan's
//! commands by index on the connections it is handed; it answers the errors of commands that
//! cannot start, and ends when the backend's end closes.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netcore::launcher::Launcher;
use netplan::GuestForward;

fn forward(argv: &[&str]) -> GuestForward {
    GuestForward {
        addr: Ipv4Addr::new(10, 0, 2, 100),
        port: 1234,
        command: argv.join(" "),
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }
}

/// The descriptors process `pid` has open, by number.
fn descriptors(pid: u32) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    fds
}

fn state(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().to_owned())
}

fn main() {
    let marker = std::env::temp_dir().join(format!("vnu-launcher-test.{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // A descriptor of ours the launcher must not keep.
    let kept_here = std::fs::File::open("/dev/null").unwrap();

    let forwards = vec![
        forward(&["sh", "-c", "echo started; read line; echo got-$line"]),
        forward(&["/nonexistent/vnu-no-such-program"]),
    ];
    let confined: PathBuf = marker.clone();
    let launcher = Launcher::fork(forwards, move || {
        std::fs::write(&confined, std::process::id().to_string())
    })
    .expect("forking the launcher");
    let pid = launcher.pid();

    // A command starts on the connection handed over, by index, with it as its streams.
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    launcher.start(0, OwnedFd::from(theirs)).expect("start 0");
    ours.write_all(b"hello\n").unwrap();
    let mut got = String::new();
    ours.read_to_string(&mut got).unwrap();
    assert_eq!(got, "started\ngot-hello\n");

    // The confinement ran in the launcher, before it served.
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        pid.to_string(),
        "the launcher's confine step"
    );
    let _ = std::fs::remove_file(&marker);

    // It holds standard input, output, error and its socket; nothing else of ours.
    let fds = descriptors(pid);
    assert_eq!(fds.len(), 4, "launcher descriptors: {fds:?}");
    assert!(fds.starts_with(&[0, 1, 2]), "launcher descriptors: {fds:?}");
    drop(kept_here);

    // A program that is not there, and an index that is not in the plan.
    let (_ours, theirs) = UnixStream::pair().unwrap();
    let err = launcher.start(1, OwnedFd::from(theirs)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let (_ours, theirs) = UnixStream::pair().unwrap();
    let err = launcher.start(7, OwnedFd::from(theirs)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    // Still serving after the errors.
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    launcher
        .start(0, OwnedFd::from(theirs))
        .expect("start 0 again");
    ours.write_all(b"again\n").unwrap();
    let mut got = String::new();
    ours.read_to_string(&mut got).unwrap();
    assert_eq!(got, "started\ngot-again\n");

    // The backend's end closes: the launcher ends (a zombie until reaped, as our child).
    drop(launcher);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match state(pid) {
            None => break,
            Some(s) if s.starts_with('Z') => break,
            Some(s) => assert!(Instant::now() < deadline, "launcher still {s}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // A launcher whose confinement fails starts nothing.
    let launcher = Launcher::fork(vec![forward(&["true"])], || {
        Err(std::io::Error::other("refused"))
    })
    .expect("forking the launcher");
    let (_ours, theirs) = UnixStream::pair().unwrap();
    assert!(launcher.start(0, OwnedFd::from(theirs)).is_err());

    println!("launcher: all checks passed");
}
