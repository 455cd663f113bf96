//! Request/response latency: short exchanges over one TCP connection the guest opens to host
//! loopback, driven and timed on the host.
//!
//! The guest connects through the gateway address with busybox `nc GATEWAY PORT -e cat`: `cat`
//! runs with the socket as stdin and stdout, so it echoes whatever arrives, at the cost of one
//! read and one write in the guest per exchange (a shell loop would cost the TCG guest far
//! more than the network does). The host side sends a [`MESSAGE_LEN`]-byte request, waits for
//! all of it to come back, and times that round trip with the host's clock; `count` exchanges
//! back to back, then it closes the connection, which ends `cat` and `nc` in the guest.
//!
//! The server runs as a process of its own (this crate's binaries start themselves with
//! [`SERVE_FLAG`] COUNT) so that it can run inside a network namespace (`ip netns exec`) like
//! any other program. It prints `listening PORT` once it listens and, after the exchanges,
//! `exchanges COUNT MEAN_NS MEDIAN_NS P99_NS` (the first [`WARMUP`] exchanges left out).

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The hidden command-line option that makes a benchmark binary run [`serve`] instead.
pub const SERVE_FLAG: &str = "--serve-rr";

/// Bytes of each request (and of its echo).
pub const MESSAGE_LEN: usize = 32;

/// Exchanges left out of the figures: the first ones pay for `cat` starting in the guest.
pub const WARMUP: usize = 10;

/// How long one exchange may take before the run counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server measured on its connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exchanges {
    /// Exchanges timed (after the warm-up).
    pub count: u64,
    pub mean: Duration,
    pub median: Duration,
    pub p99: Duration,
}

/// Summarizes round-trip times: (mean, median, 99th percentile).
pub fn summarize(rtts: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    if rtts.is_empty() {
        return None;
    }
    let mut sorted = rtts.to_vec();
    sorted.sort_unstable();
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    let median = sorted[sorted.len() / 2];
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    Some((mean, median, p99))
}

/// The server: binds a free port on 127.0.0.1, prints `listening PORT`, accepts one connection,
/// runs `count` exchanges on it and prints the figures.
pub fn serve(count: usize) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("listening {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let e = run_exchanges(&listener, count)?;
    println!(
        "exchanges {} {} {} {}",
        e.count,
        e.mean.as_nanos(),
        e.median.as_nanos(),
        e.p99.as_nanos()
    );
    std::io::stdout().flush().map_err(|e| e.to_string())
}

/// Accepts one connection on `listener` and times `count` exchanges on it (the first
/// [`WARMUP`] left out), then closes it.
pub fn run_exchanges(listener: &TcpListener, count: usize) -> Result<Exchanges, String> {
    let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut request = [0u8; MESSAGE_LEN];
    for (i, b) in request.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    request[MESSAGE_LEN - 1] = b'\n';
    let mut answer = [0u8; MESSAGE_LEN];
    let mut rtts = Vec::with_capacity(count);
    for k in 0..count {
        let sent = Instant::now();
        conn.write_all(&request)
            .map_err(|e| format!("exchange {k}: write: {e}"))?;
        conn.read_exact(&mut answer)
            .map_err(|e| format!("exchange {k}: read: {e}"))?;
        rtts.push(sent.elapsed());
        if answer != request {
            return Err(format!("exchange {k}: the echo differs from the request"));
        }
    }
    drop(conn);
    let timed = rtts.get(WARMUP..).unwrap_or(&[]);
    let (mean, median, p99) = summarize(timed).ok_or("too few exchanges to time")?;
    Ok(Exchanges {
        count: timed.len() as u64,
        mean,
        median,
        p99,
    })
}

/// Parses the server's `exchanges COUNT MEAN_NS MEDIAN_NS P99_NS` line.
pub fn parse_exchanges(line: &str) -> Option<Exchanges> {
    let mut words = line.strip_prefix("exchanges ")?.split_whitespace();
    let count = words.next()?.parse().ok()?;
    let mut next = || Some(Duration::from_nanos(words.next()?.parse().ok()?));
    let (mean, median, p99) = (next()?, next()?, next()?);
    (count > 0).then_some(Exchanges {
        count,
        mean,
        median,
        p99,
    })
}

/// A running server process; killed on drop.
#[derive(Debug)]
pub struct EchoServer {
    child: Child,
    port: u16,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl EchoServer {
    /// Runs `command` (e.g. `[ip netns exec NS] BINARY --serve-rr COUNT`) and waits until it
    /// listens. Its errors go to our stderr.
    pub fn start(command: &[String]) -> Result<EchoServer, String> {
        let (program, args) = command.split_first().ok_or("empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the latency server ({program}): {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let port = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("listening ")?.trim().parse().ok());
        match port {
            Some(port) => Ok(EchoServer {
                child,
                port,
                lines: Some(lines),
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "latency server `{}` did not listen",
                    command.join(" ")
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// For a server that prints iperf3's `Accepted connection` and exits when its test is over
    /// (the connection-rate server, [`crate::connrate`]): the CPU window of its test, as
    /// [`crate::watch_window`] samples it.
    pub fn watch_window(&mut self, procs: crate::Watched) -> JoinHandle<Option<crate::Window>> {
        crate::watch_window(self.lines.take().expect("watch is called once"), procs)
    }

    /// Reads the server's result in a thread, which ends when the server does (or is killed).
    pub fn watch(&mut self) -> JoinHandle<Option<Exchanges>> {
        let lines = self.lines.take().expect("watch is called once");
        std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .find_map(|l| parse_exchanges(&l))
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line() {
        let e = parse_exchanges("exchanges 300 1500000 1400000 2000000").unwrap();
        assert_eq!(e.count, 300);
        assert_eq!(e.mean, Duration::from_micros(1500));
        assert_eq!(e.median, Duration::from_micros(1400));
        assert_eq!(e.p99, Duration::from_micros(2000));
        assert_eq!(parse_exchanges("exchanges 0 0 0 0"), None);
        assert_eq!(parse_exchanges("exchanges 3 1 2"), None);
        assert_eq!(parse_exchanges("listening 4000"), None);
    }

    #[test]
    fn summaries() {
        let ms = Duration::from_millis;
        assert_eq!(summarize(&[]), None);
        let rtts: Vec<Duration> = (1..=100).map(ms).collect();
        let (mean, median, p99) = summarize(&rtts).unwrap();
        assert_eq!(mean, Duration::from_micros(50_500));
        assert_eq!(median, ms(51));
        assert_eq!(p99, ms(100));
    }

    #[test]
    fn times_an_echoing_peer() {
        use std::net::TcpStream;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The guest's `cat`: echoes until the server closes.
        let peer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut buf = [0u8; 7];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let e = run_exchanges(&listener, WARMUP + 20).unwrap();
        peer.join().unwrap();
        assert_eq!(e.count, 20);
        assert!(e.median <= e.p99);
        assert!(e.mean > Duration::ZERO);
    }
}
