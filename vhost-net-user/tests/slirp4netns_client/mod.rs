//! slirp4netns's API client, written from its man page ("API SOCKET"): one request per
//! connection, the write side shut down after it, the reply read to its end. Shared by
//! `api_socket.rs` here and the vnu-tests crate's `e2e_api.rs` (through `#[path]`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    reply += chunk
sys.stdout.write(reply.decode())
"#;

/// Sends `request` to the API socket `api` as slirp4netns's client does; the reply as JSON.
pub fn request(api: &Path, request: &str) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(api)
        .arg(request)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}
