//! Small servers on the host's loopback for guests to reach through the gateway address:
//! an HTTP server that serves one body, and a TCP sink that reports what it received. Each
//! serves its clients one after the other, or (the `_concurrent` ones) all at once, for
//! guests that run transfers in parallel. And the host's iperf3 as a server, and ports for
//! listeners that a backend opens later.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first 16 hex digits of the SHA-256 of `data`, as the guest scripts print them.
pub fn sha256_16(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    writer.join().expect("writer").expect("write to sha256sum");
    String::from_utf8_lossy(&out.stdout)[..16].to_owned()
}

/// Deterministic test data of `len` bytes.
pub fn blob(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Serves `body` over HTTP/1.0 to `requests` clients on `bind` (port 0: any); returns the
/// port. Each request gets the whole body, whatever path it asks for.
pub fn http_server(bind: &str, body: Vec<u8>, requests: usize) -> (u16, JoinHandle<()>) {
    serve(bind, "the HTTP server", requests, move |conn| {
        http_reply(conn, &body)
    })
}

/// [`http_server`] serving its `requests` clients at once, each on a thread of its own; the
/// handle ends when all have been served.
pub fn http_server_concurrent(bind: &str, body: Vec<u8>, requests: usize) -> (u16, JoinHandle<()>) {
    let body = Arc::new(body);
    serve_concurrently(bind, "the HTTP server", requests, move |conn| {
        http_reply(conn, &body)
    })
}

fn http_reply(mut conn: TcpStream, body: &[u8]) {
    let mut request = [0u8; 2048];
    let _ = conn.read(&mut request);
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// Accepts `clients` connections on `bind`, reads each to its end and answers
/// `"<bytes> <sha256 prefix>\n"`; returns the port.
pub fn tcp_sink(bind: &str, clients: usize) -> (u16, JoinHandle<()>) {
    serve(bind, "the TCP sink", clients, sink_reply)
}

/// [`tcp_sink`] serving its `clients` at once, each on a thread of its own; the handle ends
/// when all have been served.
pub fn tcp_sink_concurrent(bind: &str, clients: usize) -> (u16, JoinHandle<()>) {
    serve_concurrently(bind, "the TCP sink", clients, sink_reply)
}

fn sink_reply(mut conn: TcpStream) {
    let mut data = Vec::new();
    let _ = conn.read_to_end(&mut data);
    let _ = conn.write_all(format!("{} {}\n", data.len(), sha256_16(&data)).as_bytes());
}

/// Listens on `bind` and hands each of the first `clients` connections to `handle`, in turn on
/// one thread; returns the port. A failed accept ends the thread.
fn serve(
    bind: &str,
    what: &str,
    clients: usize,
    mut handle: impl FnMut(TcpStream) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {what}: {e:?}"));
    let port = listener.local_addr().expect("local address").port();
    let thread = std::thread::spawn(move || {
        for _ in 0..clients {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            handle(conn);
        }
    });
    (port, thread)
}

/// Like [`serve`], with each connection handled on a thread of its own; the returned handle
/// joins them all.
fn serve_concurrently(
    bind: &str,
    what: &str,
    clients: usize,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> (u16, JoinHandle<()>) {
    let handle = Arc::new(handle);
    let mut threads = Vec::new();
    let (port, acceptor) = serve(bind, what, clients, move |conn| {
        let handle = Arc::clone(&handle);
        threads.push(std::thread::spawn(move || handle(conn)));
        if threads.len() == clients {
            for thread in threads.drain(..) {
                let _ = thread.join();
            }
        }
    });
    (port, acceptor)
}

/// Ports to try for a test's listener that something else starts later (a backend's forward):
/// pseudo-random, from 20000 to 31991, below the kernel's ephemeral range (32768 and up by
/// default). A port the kernel hands out for port 0 can be handed out again, or be taken by any
/// test's `connect`, before that listener binds it; once, `[::1]:42509` was gone by then. A
/// port below the range is taken only by an explicit bind. Room for 8 consecutive ports.
pub fn candidate_ports() -> impl Iterator<Item = u16> {
    use std::hash::{BuildHasher, RandomState};
    const LOWEST: u16 = 20000;
    const SPAN: u64 = 12000 - 8;
    let seeds = RandomState::new();
    (0u32..200).map(move |i| LOWEST + (seeds.hash_one(i) % SPAN) as u16)
}

/// A TCP port free on `ip` (`127.0.0.1`, `::1` or `[::1]`) at the time of asking, from
/// [`candidate_ports`].
pub fn free_port(ip: &str) -> u16 {
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .expect("address");
    candidate_ports()
        .find(|&port| TcpListener::bind((ip, port)).is_ok())
        .unwrap_or_else(|| panic!("no free TCP port on {ip} between 20000 and 31991"))
}

/// An iperf3 server process; killed on drop.
#[derive(Debug)]
pub struct IperfServer(Child);

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An iperf3 server on `ip` (`127.0.0.1`, `::1`) port `port`, once it listens there.
pub fn iperf3_server(ip: &str, port: u16) -> IperfServer {
    let child = Command::new("iperf3")
        .args(["-s", "-B", ip, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (Debian package iperf3)");
    let mut server = IperfServer(child);
    let table = if ip.contains(':') { "tcp6" } else { "tcp" };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::netns::bound_ports(server.0.id(), table).contains(&port) {
        let exited = server.0.try_wait().ok().flatten();
        assert!(exited.is_none(), "iperf3 -s exited: {exited:?}");
        assert!(
            Instant::now() < deadline,
            "iperf3 -s not listening on {port} in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ports_leave_room_for_eight_below_the_ephemeral_range() {
        let ports: Vec<u16> = candidate_ports().collect();
        assert_eq!(ports.len(), 200);
        assert!(
            ports.iter().all(|&p| (20000..=31991).contains(&p)),
            "{ports:?}"
        );
        assert!(
            ports.iter().any(|&p| p != ports[0]),
            "not spread: {ports:?}"
        );
    }
}
