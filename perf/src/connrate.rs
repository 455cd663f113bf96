//! TCP connection rate: the guest opens one short connection after another to a server on host
//! loopback (connect, one 32-byte exchange, close), as fast as it can for a fixed time.
//!
//! The guest's side is `vnu-connrate` (`perf/src/bin/vnu-connrate.rs`), a static binary that
//! [`build_guest_tool`] compiles with rustc and the benchmark hands to the guest through QEMU's
//! fw_cfg (the busybox guest has no compiler and no package manager). The host side is
//! [`serve`], run as a process of its own (a benchmark binary started with [`SERVE_FLAG`]) so
//! that it can run inside passt's namespace: it prints `listening PORT`, then answers every
//! connection's request and closes it first, so TIME_WAIT stays on the host and the guest's
//! ephemeral ports never run out. The guest counts and times; its line is the result. The
//! server prints `Accepted connection` at its first connection and exits after the tool's
//! last one, whose request is [`END_REQUEST`] bytes: the benchmark samples the backend's CPU
//! time at those two moments, as for iperf3 (see [`crate::watch_window`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The hidden command-line option that makes a benchmark binary run [`serve`] instead.
pub const SERVE_FLAG: &str = "--serve-conn";

/// Bytes of each request and answer (as `vnu-connrate` sends and expects).
pub const MESSAGE_LEN: usize = 32;

/// The byte that fills the tool's last request, after its time is up (any other fills the
/// measured ones): the server answers it and exits.
pub const END_REQUEST: u8 = b'e';

/// The fw_cfg name the guest finds the tool under (`/sys/firmware/qemu_fw_cfg/by_name/NAME/raw`).
pub const FW_CFG_NAME: &str = "opt/vnu/connrate";

/// How long the server waits for one request before giving up on that connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The server: binds a free port on 127.0.0.1, prints `listening PORT`, and serves until it is
/// killed. A connection that misbehaves (short request, timeout) is dropped and the server goes
/// on: the next one is the guest's next attempt.
pub fn serve() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("listening {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut first = true;
    loop {
        let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        if first {
            first = false;
            // iperf3's words, which `watch_window` starts its window at.
            println!("Accepted connection");
            std::io::stdout().flush().map_err(|e| e.to_string())?;
        }
        if let Ok(END_REQUEST) = answer(conn) {
            return Ok(());
        }
    }
}

/// Reads one request and writes the answer; dropping the stream closes it (the server's FIN
/// comes first). Returns the request's first byte.
fn answer(mut conn: TcpStream) -> std::io::Result<u8> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = [0u8; MESSAGE_LEN];
    conn.read_exact(&mut request)?;
    conn.write_all(&[b'a'; MESSAGE_LEN])?;
    Ok(request[0])
}

/// What the guest's tool reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub first_error: Option<String>,
}

impl Rate {
    pub fn per_second(&self) -> Option<f64> {
        (self.connections > 0 && self.seconds > 0.0).then(|| self.connections as f64 / self.seconds)
    }
}

/// Parses `connections N errors E seconds S [first_error TEXT]`.
pub fn parse_rate(line: &str) -> Option<Rate> {
    let (counts, first_error) = match line.split_once(" first_error ") {
        Some((c, e)) => (c, Some(e.trim().to_owned())),
        None => (line, None),
    };
    let words: Vec<&str> = counts.split_whitespace().collect();
    match words[..] {
        ["connections", n, "errors", e, "seconds", s] => Some(Rate {
            connections: n.parse().ok()?,
            errors: e.parse().ok()?,
            seconds: s.parse().ok()?,
            first_error,
        }),
        _ => None,
    }
}

/// Compiles the guest's tool, static, into `target/perf/vnu-connrate` (when its source is newer
/// than the binary): rustc alone, no cargo, so it takes a few seconds and none of this crate's
/// dependencies.
pub fn build_guest_tool() -> Result<PathBuf, String> {
    let source = vnu_tests::workspace_root().join("perf/src/bin/vnu-connrate.rs");
    let dir = vnu_tests::target_dir().join("perf");
    let out = dir.join("vnu-connrate");
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(bin)) = (modified(&source), modified(&out))
        && bin >= src
    {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2024",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&out)
        .arg(&source)
        .status()
        .map_err(|e| {
            format!("running {rustc} for the connection-rate test (leave it out with --tests): {e}")
        })?;
    if !status.success() {
        return Err(format!(
            "building the guest tool {} failed ({status}; leave the connection-rate test out \
             with --tests)",
            source.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guest_line() {
        let r = parse_rate("connections 1200 errors 0 seconds 4.002").unwrap();
        assert_eq!(r.connections, 1200);
        assert_eq!(r.errors, 0);
        assert_eq!(r.first_error, None);
        assert!((r.per_second().unwrap() - 1200.0 / 4.002).abs() < 1e-9);
        let r =
            parse_rate("connections 0 errors 20 seconds 1.5 first_error connect: refused").unwrap();
        assert_eq!(r.first_error.as_deref(), Some("connect: refused"));
        assert_eq!(r.per_second(), None);
        assert_eq!(parse_rate("connections 3 errors 0"), None);
        assert_eq!(parse_rate("rc=1"), None);
    }

    #[test]
    fn answers_a_request_and_closes_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            answer(conn).unwrap()
        });
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[b'q'; MESSAGE_LEN]).unwrap();
        let mut got = Vec::new();
        // read_to_end returns only once the server has closed.
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, [b'a'; MESSAGE_LEN]);
        assert_eq!(server.join().unwrap(), b'q');
    }
}
