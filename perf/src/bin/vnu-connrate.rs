//! vnu-connrate: the guest's side of compare-backends' TCP connection-rate test.
//!
//! `vnu-connrate IP:PORT SECONDS`: for SECONDS, one connection after another to IP:PORT, each
//! sending a 32-byte request and reading the server's 32-byte answer up to its close (the host
//! closes first, so TIME_WAIT stays on the host and the guest's ports never run out). Then one
//! more connection, uncounted, whose request is all `e`: it tells the server the test is over.
//! Prints one line: `connections N errors E seconds S [first_error TEXT]`.
//!
//! It runs in the busybox test guest, so it depends on std only and is built static
//! (compare-backends compiles this file with `rustc -C target-feature=+crt-static` and hands it
//! to the guest through QEMU's fw_cfg); it takes an IP literal, since there is nothing to
//! resolve names with. It is a cargo binary too, only so that clippy checks it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Bytes of the request and of the answer (compare-backends' server expects this many).
const MESSAGE_LEN: usize = 32;

/// How long one connection may take before it counts as an error.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors in a row after which the run gives up: the backend is not answering.
const MAX_ERRORS_IN_A_ROW: u32 = 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(seconds)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|s| s.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: vnu-connrate IP:PORT SECONDS");
        return ExitCode::from(2);
    };
    let length = Duration::from_secs_f64(seconds.clamp(0.1, 3600.0));
    let started = Instant::now();
    let (mut connections, mut errors, mut in_a_row) = (0u64, 0u64, 0u32);
    let mut first_error = None;
    while started.elapsed() < length {
        match exchange(addr, b'q') {
            Ok(()) => {
                connections += 1;
                in_a_row = 0;
            }
            Err(e) => {
                errors += 1;
                in_a_row += 1;
                first_error.get_or_insert(e);
                if in_a_row >= MAX_ERRORS_IN_A_ROW {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The end of the test for the server (which then exits); not counted.
    let _ = exchange(addr, b'e');
    match first_error {
        Some(e) => println!(
            "connections {connections} errors {errors} seconds {elapsed:.3} first_error {e}"
        ),
        None => println!("connections {connections} errors {errors} seconds {elapsed:.3}"),
    }
    if connections > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One connection: connect, send the request (`fill` bytes), read the whole answer and the
/// server's close.
fn exchange(addr: SocketAddr, fill: u8) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECTION_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(CONNECTION_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let request = [fill; MESSAGE_LEN];
    stream
        .write_all(&request)
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::with_capacity(MESSAGE_LEN);
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.len() != MESSAGE_LEN {
        return Err(format!(
            "answer of {} bytes, not {MESSAGE_LEN}",
            answer.len()
        ));
    }
    Ok(())
}
