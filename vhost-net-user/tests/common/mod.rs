//! What the tests that run the built program share: waiting with a deadline, reading pid
//! files and /proc, free ports, and the one vhost-user request that shows a backend serves.

// Each test binary compiles this module for itself and uses only some of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `what` until it holds, for at most 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port nothing listens on just now on `ip` (`127.0.0.1`, `[::]`), below the ephemeral
/// range, as the end-to-end tests take theirs.
#[allow(unused_imports)] // not every test binary takes ports
pub use vnu_tests::hostsrv::free_port;

/// The pid the pid file holds.
pub fn pid_in(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text:?}", path.display()))
}

/// The process's state letter in /proc (`Z` for a zombie) and its parent, `None` once it is
/// gone.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(") ")?.1.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// vhost-user's GET_FEATURES over `sock` (answered once the backend serves); returns the
/// features the backend offers.
pub fn get_features(sock: &mut UnixStream) -> u64 {
    const GET_FEATURES: u32 = 1;
    const VERSION_1: u32 = 1;
    const REPLY: u32 = 4;
    let mut msg = Vec::new();
    msg.extend_from_slice(&GET_FEATURES.to_le_bytes());
    msg.extend_from_slice(&VERSION_1.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes());
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(&msg).unwrap();
    let mut reply = [0u8; 20];
    sock.read_exact(&mut reply).unwrap();
    let word = |at: usize| u32::from_le_bytes(reply[at..at + 4].try_into().unwrap());
    assert_eq!(word(0), GET_FEATURES);
    assert_eq!(word(4), VERSION_1 | REPLY);
    assert_eq!(word(8), 8);
    u64::from_le_bytes(reply[12..20].try_into().unwrap())
}
