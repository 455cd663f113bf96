//! The API socket's server: one thread, one request per connection.
//!
//! The thread reads a request (until the client shuts down its write side, the bytes read
//! so far make a whole JSON value, or two seconds pass), binds or checks what it needs, and
//! hands changes to the running engine through [`Control`], whose reply waits until the
//! engine applied them. Nothing here runs in the engine's thread, so a slow client or a
//! bind never stalls the data path; the engine spends a few epoll calls per change.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use netcore::control::Control;
use policy::{HostListen, NetPlan};
use serde_json::{Value, json};

use super::{MAX_REQUEST, Request, check_forward, entry, parse_request, reply_error, reply_ok};
use crate::error::error_chain;
use crate::exit;

/// How long a client may take to send its request or read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// What is read and dropped after a request found too large, at most, so that the client
/// can finish writing and read its error.
const DRAIN_LIMIT: usize = 1 << 20;

/// Serves `listener` on a thread of its own for the life of the process.
pub fn spawn(
    listener: UnixListener,
    control: Arc<Control>,
    plan: NetPlan,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vnu-api".into())
        .spawn(move || serve(&listener, &control, &plan))
}

fn serve(listener: &UnixListener, control: &Control, plan: &NetPlan) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = serve_one(stream, control, plan) {
                    log::debug!("api client: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, most likely: try again later rather than spin.
                log::warn!("api socket: accepting failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one(mut stream: UnixStream, control: &Control, plan: &NetPlan) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let raw = read_request(&mut stream)?;
    let reply = handle(&raw, control, plan);
    stream.write_all(reply.as_bytes())?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// The request's bytes: up to the client's end of writing, a whole JSON value, or
/// [`MAX_REQUEST`] (then what follows is drained, up to a limit).
fn read_request(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(MAX_REQUEST);
    let mut chunk = [0u8; MAX_REQUEST];
    loop {
        let n = match stream.read(&mut chunk[..MAX_REQUEST - raw.len()]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        };
        raw.extend_from_slice(&chunk[..n]);
        if n == 0 || serde_json::from_slice::<Value>(&raw).is_ok() {
            break;
        }
        if raw.len() >= MAX_REQUEST {
            let mut drained = 0;
            while drained < DRAIN_LIMIT {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            break;
        }
    }
    Ok(raw)
}

/// The reply to request `raw`.
pub fn handle(raw: &[u8], control: &Control, plan: &NetPlan) -> String {
    let request = match parse_request(raw) {
        Ok(request) => request,
        Err(desc) => {
            log::info!("api: {desc}");
            return reply_error(&desc);
        }
    };
    match execute(request, control, plan) {
        Ok(value) => reply_ok(value),
        Err(desc) => {
            log::info!("api: {desc}");
            reply_error(&desc)
        }
    }
}

fn execute(request: Request, control: &Control, plan: &NetPlan) -> Result<Value, String> {
    match request {
        Request::AddHostfwd(fwd) => {
            let bad = |e: &str| format!("bad request: add_hostfwd: {e}");
            let spec = fwd.to_forward();
            check_forward(plan, &spec).map_err(|e| bad(&e))?;
            if let Some(id) = control.clash(&spec) {
                return Err(bad(&format!("forwarded already by forward {id}")));
            }
            let sockets = netcore::forward::open_one(&spec).map_err(|e| bad(&error_chain(&e)))?;
            if let HostListen::Unix { path } = &spec.host {
                exit::remove_at_exit(path);
            }
            let shown: Vec<String> = sockets.iter().map(ToString::to_string).collect();
            let id = control
                .add(spec, sockets)
                .map_err(|e| bad(&e.to_string()))?;
            log::info!("api: forward {id} added: {}", shown.join(", "));
            Ok(json!({ "id": id }))
        }
        Request::ListHostfwd => {
            let entries: Vec<Value> = control
                .rules()
                .iter()
                .map(|(id, spec)| entry(*id, spec, plan))
                .collect();
            Ok(json!({ "entries": entries }))
        }
        Request::RemoveHostfwd { id } => {
            let removed = control
                .remove(id)
                .map_err(|e| format!("bad request: remove_hostfwd: {e}"))?;
            let Some(spec) = removed else {
                return Err("bad request: remove_hostfwd: bad arguments.id".into());
            };
            if let HostListen::Unix { path } = &spec.host {
                let _ = std::fs::remove_file(path);
            }
            log::info!("api: forward {id} removed");
            Ok(json!({}))
        }
        Request::QueryStats => {
            let stats = control
                .stats()
                .ok_or("bad request: query_stats: no frontend is connected")?;
            serde_json::from_str(&stats.to_json()).map_err(|e| format!("query_stats: {e}"))
        }
        Request::ListFlows => {
            let flows = control
                .flows()
                .ok_or("bad request: list_flows: no frontend is connected")?;
            let flows: Vec<Value> = flows.iter().map(super::flow_entry).collect();
            Ok(json!({ "flows": flows }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adding, listing and removing through the handler, without an engine: the port listens
    /// once added and refuses once removed; a duplicate and an unknown id are errors.
    #[test]
    fn add_list_remove_bind_and_close_the_port() {
        let plan = NetPlan::slirp_default();
        let control = Control::new(Vec::new()).unwrap();
        let req = |text: String| handle(text.as_bytes(), &control, &plan);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let add = format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_port":80}}}}"#
        );
        assert_eq!(req(add.clone()), r#"{"return":{"id":1}}"#);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening");
        let dup = req(add);
        assert!(
            dup.starts_with(r#"{"error":{"desc":"bad request: add_hostfwd: forwarded already"#),
            "{dup}"
        );
        let listed: Value =
            serde_json::from_str(&req(r#"{"execute":"list_hostfwd"}"#.into())).unwrap();
        assert_eq!(
            listed,
            json!({"return": {"entries": [{"id": 1, "proto": "tcp", "host_addr": "127.0.0.1",
                "host_port": port, "guest_addr": "10.0.2.15", "guest_port": 80}]}})
        );
        let remove = |id: u32| {
            req(format!(
                r#"{{"execute":"remove_hostfwd","arguments":{{"id":{id}}}}}"#
            ))
        };
        assert_eq!(
            remove(2),
            r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
        );
        assert_eq!(remove(1), r#"{"return":{}}"#);
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            req(r#"{"execute":"list_hostfwd"}"#.into()),
            r#"{"return":{"entries":[]}}"#
        );
        let outside = format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{port},"guest_addr":"192.0.2.1","guest_port":80}}}}"#
        );
        assert!(req(outside).contains("not a guest address in 10.0.2.0/24"));
    }
}
