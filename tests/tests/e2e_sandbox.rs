//! End-to-end confinement: a backend started as root (as the tests run) serves a real guest as
//! `nobody`, with no new privileges and a seccomp filter on every thread, and the guest still
//! gets its address by DHCP, pings and fetches from a host address (a ping socket and a TCP
//! connection made by the confined process), and runs a guest forward command (through the
//! launcher, as `nobody` too), while its vring worker runs under a narrower filter of its
//! own. `--sandbox=off` leaves the process as it was started.
//!
//! The backend runs in a network namespace of the test's own, whose `ping_group_range` admits
//! every group (nobody's included) and whose loopback holds the host address the guest reaches.

use std::path::Path;
use std::time::{Duration, Instant};

use vnu_tests::netns::{self, Netns};
use vnu_tests::{Backend, GuestOpts, TempDir, e2e_ready};

/// An address of the namespace's loopback: not emulated, so reached through host sockets.
const HOST_ADDR: &str = "192.0.2.7";
const HTTP_PORT: u16 = 8087;
const CONTENT: &str = "served to a confined backend";

/// `Name:` fields of `/proc/PID/status`, one line each.
fn status_fields(pid: u32, names: &[&str]) -> Vec<String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    names
        .iter()
        .map(|name| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}:")))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| format!("{name}: (missing)"))
        })
        .collect()
}

/// Every thread of `pid`, and its children (the launcher, the janitor).
fn threads_and_children(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let mut threads = Vec::new();
    let mut children = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let tid: u32 = entry
            .expect("task")
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("numeric task");
        threads.push(tid);
        let list =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).unwrap_or_default();
        children.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    (threads, children)
}

const SCRIPT: &str = r#"echo "sandbox.ping=$(ping -c 1 -W 5 192.0.2.7 > /dev/null 2>&1 && echo ok || echo fail)"
echo "sandbox.http=$(timeout 20 wget -q -O - http://192.0.2.7:8087/file.txt 2>&1)"
echo "sandbox.command=$(nc -w 10 10.0.2.100 1234 < /dev/null 2>&1)"
echo "sandbox: mark=workers" > /dev/console
echo "sandbox.released=$(nc -w 60 10.0.2.100 1235 < /dev/null 2>&1)"
"#;

#[test]
fn a_root_backend_serves_a_guest_as_nobody_with_seccomp_and_no_new_privs() {
    if !e2e_ready() || !netns::ready() {
        return;
    }
    let ns = Netns::new("sb").expect("namespace");
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        .expect("ping_group_range");
    ns.ip(&["addr", "add", &format!("{HOST_ADDR}/32"), "dev", "lo"])
        .expect("host address");
    let www = TempDir::new("sandbox-www").expect("temp dir");
    // The guest holds its connection (so its vring worker lives) until the test has looked:
    // a guest forward's command answers once the test creates `released` here.
    std::fs::set_permissions(
        www.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let released = www.join("released");
    let release_rule = format!(
        "guestfwd=tcp:10.0.2.100:1235-cmd:sh -c 'while [ ! -e {} ]; do sleep 0.1; done; echo yes'",
        released.display()
    );
    std::fs::write(www.join("file.txt"), CONTENT).expect("file.txt");
    let port = HTTP_PORT.to_string();
    let mut server = ns
        .spawn(
            "python3",
            &[
                "-m",
                "http.server",
                "--bind",
                HOST_ADDR,
                "--directory",
                www.path().to_str().expect("utf-8 path"),
                &port,
            ],
            &www.join("http.log"),
        )
        .expect("HTTP server");
    server
        .wait_listening(&[HTTP_PORT], &[], Duration::from_secs(10))
        .expect("HTTP server listening");

    let backend = Backend::start_in(
        &ns,
        &[
            "-v",
            "--slirp",
            "guestfwd=tcp:10.0.2.100:1234-cmd:sh -c 'echo uid-$(id -u)'",
            "--slirp",
            &release_rule,
        ],
    )
    .expect("starting the backend");
    let pid = backend.pid();
    // The socket appears before the backend confines itself (once everything is open).
    wait_confined(pid, &|| backend.log());
    let (threads, children) = threads_and_children(pid);
    for tid in &threads {
        assert_eq!(
            status_fields(*tid, &["Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp"]),
            [
                "Uid: 65534 65534 65534 65534",
                "Gid: 65534 65534 65534 65534",
                "Groups:",
                "NoNewPrivs: 1",
                "Seccomp: 2"
            ],
            "thread {tid} of the backend:\n{}",
            backend.log()
        );
    }
    // Two children: the guest forwards' launcher (nobody, no groups, no filter) and, forked
    // after it, the janitor (root, its own filter), which removes the socket at exit.
    let mut fields: Vec<Vec<String>> = children
        .iter()
        .map(|&child| status_fields(child, &["Uid", "NoNewPrivs", "Seccomp", "Groups"]))
        .collect();
    fields.sort();
    for f in &mut fields {
        if f[0] == "Uid: 0 0 0 0" {
            f.pop(); // root's groups are the test's
        }
    }
    assert_eq!(
        fields,
        [
            vec!["Uid: 0 0 0 0", "NoNewPrivs: 1", "Seccomp: 2"],
            vec![
                "Uid: 65534 65534 65534 65534",
                "NoNewPrivs: 1",
                "Seccomp: 0",
                "Groups:"
            ],
        ],
        "the janitor and the launcher: {children:?}"
    );

    let mut guest = netns::spawn_guest(
        &ns,
        &GuestOpts::new("ours-sandbox", backend.net()).script(SCRIPT),
    )
    .expect("guest");
    // While the guest is connected, its vring worker (the thread that handles what the guest
    // sends) has added its own, narrower filter to the process's two.
    guest
        .wait_for_line("sandbox: mark=workers", Duration::from_secs(120))
        .expect("the guest's mark");
    let (threads, _) = threads_and_children(pid);
    let filters: Vec<String> = threads
        .iter()
        .map(|tid| status_fields(*tid, &["Seccomp_filters"]).join(""))
        .collect();
    assert!(
        filters.iter().any(|f| f == "Seccomp_filters: 3"),
        "no thread with the worker's filter: {filters:?}"
    );
    assert!(
        filters
            .iter()
            .all(|f| f == "Seccomp_filters: 2" || f == "Seccomp_filters: 3"),
        "{filters:?}"
    );
    std::fs::write(&released, "").expect("releasing the guest");
    let run = guest.wait().expect("guest");
    let context = format!("backend log:\n{}", vnu_tests::tail(&backend.log(), 40));
    run.assert_values(&[("guest.addr", "10.0.2.15/24")], &context);
    for line in [
        "sandbox.ping=ok".to_owned(),
        format!("sandbox.http={CONTENT}"),
        "sandbox.command=uid-65534".to_owned(),
        "sandbox.released=yes".to_owned(),
    ] {
        assert!(
            run.run.contains(&line),
            "the guest did not print {line:?}:\n{}\n{context}",
            run.report()
        );
    }
    // Everything above ran confined: the filter would have killed the backend otherwise.
    let (threads, _) = threads_and_children(pid);
    assert!(!threads.is_empty(), "the backend is gone:\n{context}");
    assert_eq!(
        status_fields(pid, &["Seccomp"]),
        ["Seccomp: 2"],
        "{context}"
    );
    drop(server);
}

#[test]
fn sandbox_off_leaves_a_root_backend_as_it_was() {
    // netns::ready: these tests need root.
    if !e2e_ready() || !netns::ready() {
        return;
    }
    let mut backend = Backend::start(&["--sandbox=off"]).expect("starting the backend");
    let pid = backend.pid();
    // Where it would have confined itself, it says it does not.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backend.log().contains("--sandbox=off: not confined") {
        assert!(Instant::now() < deadline, "{}", backend.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        status_fields(pid, &["Uid", "NoNewPrivs", "Seccomp"]),
        ["Uid: 0 0 0 0", "NoNewPrivs: 0", "Seccomp: 0"],
        "{}",
        backend.log()
    );
    assert!(backend.stop().success());
}

#[test]
fn a_bad_runas_is_one_line_and_exit_2() {
    // Not started as root, the backend ignores --runas.
    if !e2e_ready() || !netns::ready() {
        return;
    }
    let dir = TempDir::new("runas").expect("temp dir");
    let socket = dir.join("vu.sock");
    for bad in ["vnu-no-such-user", "nobody:vnu-no-such-group", ":0"] {
        let done = vnu_tests::run_backend_to_exit(
            &[
                "--socket-path",
                socket.to_str().expect("utf-8 path"),
                "--runas",
                bad,
            ],
            Duration::from_secs(10),
        )
        .expect("running the backend");
        assert_eq!(
            done.status.and_then(|s| s.code()),
            Some(2),
            "--runas {bad}: {}",
            done.stderr
        );
        let lines: Vec<&str> = done.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "--runas {bad}: {}", done.stderr);
        assert!(
            lines[0].contains(&format!("--runas {bad}")),
            "--runas {bad}: {}",
            lines[0]
        );
        assert!(
            !Path::new(&socket).exists(),
            "--runas {bad} left its socket"
        );
    }
}

/// Waits (up to 10 s) until process `pid` has its seccomp filter: confinement is its last
/// step before serving.
fn wait_confined(pid: u32, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_fields(pid, &["Seccomp"]) != ["Seccomp: 2"] {
        assert!(
            Instant::now() < deadline,
            "no seccomp filter after 10 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runas_takes_numeric_ids() {
    if !e2e_ready() || !netns::ready() {
        return;
    }
    let backend = Backend::start(&["--runas", "4321:4322"]).expect("starting the backend");
    wait_confined(backend.pid(), &|| backend.log());
    assert_eq!(
        status_fields(backend.pid(), &["Uid", "Gid", "Groups", "NoNewPrivs"]),
        [
            "Uid: 4321 4321 4321 4321",
            "Gid: 4322 4322 4322 4322",
            "Groups:",
            "NoNewPrivs: 1"
        ],
        "{}",
        backend.log()
    );
}

/// Started by a normal user, the backend stays that user (`--runas` is ignored) and still
/// confines itself.
#[test]
fn a_normal_user_stays_and_is_confined() {
    if !e2e_ready() || !netns::ready() || !vnu_tests::require_program("setpriv", "util-linux") {
        return;
    }
    let dir = TempDir::new("normal-user").expect("temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let socket = dir.join("vu.sock");
    let log = dir.join("backend.log");
    let bin = vnu_tests::backend_bin().expect("backend binary");
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid=4321", "--regid=4321", "--clear-groups", "--"])
        .arg(&bin)
        .args(["-vv", "--runas", "nobody", "--socket-path"])
        .arg(&socket)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("setpriv");
    // setpriv execs the backend: same pid.
    let pid = child.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_confined(pid, &read_log);
    let fields = status_fields(pid, &["Uid", "NoNewPrivs"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        fields,
        ["Uid: 4321 4321 4321 4321", "NoNewPrivs: 1"],
        "{}",
        read_log()
    );
    assert!(
        read_log().contains("--runas nobody ignored: not started as root"),
        "{}",
        read_log()
    );
}
