//! `--api-socket` against the built program, without a guest: a slirp4netns client (a few
//! lines of Python written from slirp4netns's documented protocol: connect, send the JSON,
//! shut down the write side, read the reply to its end) adds, lists and removes forwards,
//! and the host ports follow; bad requests get error objects while the backend carries on;
//! `vhost-net-user ctl` does the same in QEMU's monitor syntax.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

mod common;
use common::{free_port, get_features, wait_until};

mod slirp4netns_client;

const PROGRAM: &str = env!("CARGO_BIN_EXE_vhost-net-user");

/// A backend with its sockets in a directory of its own; killed and cleaned up on drop.
struct Backend {
    dir: PathBuf,
    child: Child,
}

impl Backend {
    fn start(name: &str, args: &[&str]) -> Backend {
        let dir = std::env::temp_dir().join(format!("vnu-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let child = Command::new(PROGRAM)
            .arg("--socket-path")
            .arg(dir.join("vu.sock"))
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let backend = Backend { dir, child };
        let vu = backend.dir.join("vu.sock");
        wait_until("the backend serves", || UnixStream::connect(&vu).is_ok());
        backend
    }

    fn api(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// The reply to `request`, sent by the slirp4netns-style client.
    fn request(&self, request: &str) -> Value {
        slirp4netns_client::request(&self.api(), request)
    }

    fn ctl(&self, words: &[&str]) -> Output {
        Command::new(PROGRAM)
            .arg("ctl")
            .arg(self.api())
            .args(words)
            .output()
            .unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn add_request(port: u16, guest: &str) -> String {
    json!({"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1",
        "host_port": port, "guest_addr": guest, "guest_port": 80}})
    .to_string()
}

fn desc(reply: &Value) -> &str {
    reply["error"]["desc"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
}

#[test]
fn a_slirp4netns_client_adds_lists_and_removes_forwards() {
    let startup = free_port("127.0.0.1");
    let mut backend = Backend::start(
        "json",
        &["--slirp", &format!("hostfwd=tcp:127.0.0.1:{startup}-:22")],
    );
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(backend.api()).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
    // Free when asked, and still not listening: another process may bind a port between
    // our check and our look (seen once in CI); such a port is no baseline.
    let port = std::iter::repeat_with(|| free_port("127.0.0.1"))
        .take(10)
        .find(|&port| !listening(port))
        .expect("a port no one listens on");
    let added = backend.request(&add_request(port, "10.0.2.15"));
    assert_eq!(added, json!({"return": {"id": 2}}));
    assert!(listening(port), "the added port listens at once");
    let listed = backend.request(r#"{"execute": "list_hostfwd"}"#);
    assert_eq!(
        listed,
        json!({"return": {"entries": [
            {"id": 1, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": startup,
             "guest_addr": "10.0.2.15", "guest_port": 22},
            {"id": 2, "proto": "tcp", "host_addr": "127.0.0.1", "host_port": port,
             "guest_addr": "10.0.2.15", "guest_port": 80},
        ]}})
    );
    let removed = backend.request(r#"{"execute": "remove_hostfwd", "arguments": {"id": 2}}"#);
    assert_eq!(removed, json!({"return": {}}));
    wait_until("the removed port refuses", || !listening(port));
    assert!(listening(startup), "the other forward stays");

    // Errors, each an error object; the backend goes on serving.
    assert_eq!(
        desc(&backend.request("{\"execute\": ")),
        "bad request: cannot parse JSON"
    );
    assert_eq!(
        desc(&backend.request(r#"{"execute": "remove_hostfwd", "arguments": {"id": 42}}"#)),
        "bad request: remove_hostfwd: bad arguments.id"
    );
    let dup = backend.request(&add_request(startup, "10.0.2.15"));
    assert!(
        desc(&dup).starts_with("bad request: add_hostfwd: forwarded already by forward 1"),
        "{dup}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let in_use = backend.request(&add_request(taken_port, "10.0.2.15"));
    assert!(desc(&in_use).contains("cannot listen"), "{in_use}");
    let bad_port = json!({"execute": "add_hostfwd", "arguments": {"proto": "tcp",
        "host_port": 70000, "guest_port": 80}});
    assert_eq!(
        desc(&backend.request(&bad_port.to_string())),
        "bad request: add_hostfwd: bad arguments.host_port"
    );
    let outside = backend.request(&add_request(free_port("127.0.0.1"), "192.0.2.1"));
    assert!(desc(&outside).contains("not a guest address"), "{outside}");
    let big = format!(
        r#"{{"execute": "list_hostfwd", "pad": "{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(
        desc(&backend.request(&big)),
        "bad request: too large message"
    );
    assert_eq!(
        desc(&backend.request(r#"{"execute": "quit"}"#)),
        "bad request: unknown execute"
    );
    // No frontend: no engine to count anything.
    assert!(desc(&backend.request(r#"{"execute": "query_stats"}"#)).contains("no frontend"));
    assert!(desc(&backend.request(r#"{"execute": "list_flows"}"#)).contains("no frontend"));
    assert!(backend.alive());
    let listed = backend.request(r#"{"execute": "list_hostfwd"}"#);
    assert_eq!(
        listed["return"]["entries"].as_array().map(Vec::len),
        Some(1)
    );
}

/// With a frontend connected, the engine (in the vring worker) applies a change and answers
/// `query_stats` from its own loop, before the guest's memory exists; a forward added then
/// outlives the frontend and the next one still has it.
#[test]
fn the_running_engine_answers_and_forwards_last_across_reconnects() {
    let mut backend = Backend::start("engine", &[]);
    let mut frontend = UnixStream::connect(backend.dir.join("vu.sock")).unwrap();
    get_features(&mut frontend);
    let stats = backend.request(r#"{"execute": "query_stats"}"#);
    assert_eq!(stats["return"]["tx_frames"], json!(0), "{stats}");
    assert_eq!(stats["return"]["tcp.open"], json!(0), "{stats}");
    assert_eq!(
        backend.request(r#"{"execute": "list_flows"}"#),
        json!({"return": {"flows": []}})
    );
    let port = free_port("127.0.0.1");
    assert_eq!(
        backend.request(&add_request(port, "10.0.2.15")),
        json!({"return": {"id": 1}})
    );
    assert!(listening(port));
    drop(frontend);
    // The next frontend's engine takes the rules as they are.
    let mut frontend = UnixStream::connect(backend.dir.join("vu.sock")).unwrap();
    get_features(&mut frontend);
    assert!(listening(port));
    let stats = backend.request(r#"{"execute": "query_stats"}"#);
    assert!(stats["return"].is_object(), "{stats}");
    assert_eq!(
        backend.request(r#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#),
        json!({"return": {}})
    );
    wait_until("the removed port refuses", || !listening(port));
    assert!(backend.alive());
}

#[test]
fn ctl_speaks_qemus_monitor_syntax() {
    let backend = Backend::start("ctl", &[]);
    let port = free_port("127.0.0.1");
    let text = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let added = backend.ctl(&["hostfwd_add", &format!("tcp:127.0.0.1:{port}-:80")]);
    assert!(added.status.success(), "{added:?}");
    assert_eq!(text(&added), "forward 1 added\n");
    assert!(listening(port));
    let info = backend.ctl(&["info", "usernet"]);
    let info = text(&info);
    let row = info
        .lines()
        .find(|l| l.contains("HOST_FORWARD"))
        .unwrap_or_else(|| panic!("{info}"));
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "TCP[HOST_FORWARD]",
            "1",
            "127.0.0.1",
            &port.to_string(),
            "10.0.2.15",
            "80"
        ]
    );
    let json_out = backend.ctl(&["--json", "info", "usernet"]);
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["entries"][0]["host_port"], json!(port));
    let removed = backend.ctl(&["hostfwd_remove", &format!("tcp:127.0.0.1:{port}")]);
    assert_eq!(text(&removed), "forward 1 removed\n");
    wait_until("the removed port refuses", || !listening(port));
    // Errors: one line, exit status 2.
    for words in [
        &["hostfwd_remove", &format!("tcp::{port}")][..],
        &["hostfwd_add", "tcp::x-:80"],
        &["nonsense"],
        &["stats"],
    ] {
        let out = backend.ctl(words);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{words:?}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{words:?}: {err}");
        assert!(err.starts_with("vhost-net-user ctl: "), "{err}");
    }
    let nowhere = Command::new(PROGRAM)
        .args(["ctl", "/nonexistent/api.sock", "info", "usernet"])
        .output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(2));
}
