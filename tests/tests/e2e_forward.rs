//! End-to-end port forwarding: host connections and datagrams to forwarded ports reach
//! services in a real QEMU guest, over both links (see [`both_links!`]).
//!
//! The backend forwards, in QEMU's `hostfwd=` syntax, host ports on 127.0.0.1 (only loopback:
//! nothing here listens beyond this machine) to guest ports where the guest script runs
//! servers:
//!
//! | host (127.0.0.1) | guest | what the guest runs there                         |
//! |------------------|-------|---------------------------------------------------|
//! | tcp+udp P        | 5201  | `iperf3 -s -1`: UDP, with its replies to the host |
//! | tcp P+1          | 5301  | `nc -l` sending 2 MiB of random data              |
//! | tcp P+2          | 5300  | `nc -l` storing what comes, then the script ends  |
//! | tcp P+3          | 5999  | nothing: the guest refuses                        |
//! | tcp P+4          | 5202  | `iperf3 -s -1`: TCP to the guest                  |
//! | tcp P+5          | 5203  | `iperf3 -s -1`: TCP from the guest (`-R`)         |
//! | tcp [::1]:P+6    | 5204  | `iperf3 -s -1`: TCP over IPv6 (passt's `-t`)      |
//! | unix:DIR/fwd.sock | 5302 | `nc -l` sending the same 2 MiB                    |
//!
//! The IPv6 forward names no guest address: it goes to the address the guest took by SLAAC,
//! which the backend learns from the guest's duplicate address detection. The iperf3 servers'
//! logs show whom the guest saw connecting: the gateway (10.0.2.2, fec0::2) for peers on the
//! host's loopback, as slirp shows them.
//!
//! Each iperf3 server serves one test: one that served a test listens anew, and a connection
//! coming in between would be refused by the guest.
//!
//! The test compares SHA-256 both ways, runs iperf3 through the forwards, and checks that the
//! refused connection ends at the host client and shows in the backend's counters. The guest
//! reaches no address itself.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use vnu_tests::hostsrv::{self, blob, sha256_16};
use vnu_tests::netns::{self, Netns};
use vnu_tests::{
    Backend, GuestOpts, Link, TempDir, both_links, e2e_ready, require_program, run_backend_to_exit,
    spawn_slotted,
};

const SAY: &str = "fwd: ";
/// Bytes the guest serves on 5301.
const DOWNLOAD: usize = 2 << 20;
/// Bytes the host sends to 5300.
const UPLOAD: usize = 1 << 20;

/// Shell functions both guest scripts use: `say KEY=VALUE` reports on the console;
/// `listening PORTS N` waits (10 s at most) until N sockets listen on ports matching PORTS
/// (hex, an extended regex; /proc/net/tcp and tcp6, since iperf3 listens dual-stack);
/// `accepted FILE` is the peer an iperf3 server's log says it took.
fn prelude() -> String {
    format!(
        r#"say() {{ echo "{SAY}$*" > /dev/console; }}
listening() {{
  n=0
  while [ $n -lt 100 ] && [ "$(cat /proc/net/tcp /proc/net/tcp6 | awk '$4 == "0A" {{ print $2 }}' | grep -c -E ":($1)\$")" -lt $2 ]; do
    sleep 0.1; n=$((n + 1))
  done
}}
accepted() {{ awk '/Accepted connection from/ {{ sub(",", "", $4); print $4; exit }}' "$1"; }}
"#
    )
}

fn guest_script() -> String {
    prelude()
        + &format!(
            r#"for p in 5201 5202 5203 5204; do iperf3 -s -1 -p $p > /tmp/iperf$p 2>&1 & done
head -c {DOWNLOAD} /dev/urandom > /tmp/blob
say "blob.sha=$(sha256sum < /tmp/blob | cut -d' ' -f1)"
nc -l -p 5301 < /tmp/blob > /dev/null &
nc -l -p 5302 < /tmp/blob > /dev/null &
timeout 150 nc -l -p 5300 > /tmp/got &
got=$!
# ready once all seven listen and the SLAAC address is out of duplicate address detection
listening '1451|1452|1453|1454|14B5|14B6|14B4' 7
n=0
while [ $n -lt 100 ] && ! ip -6 addr show dev eth0 scope site | grep inet6 | grep -qv tentative; do
  sleep 0.1; n=$((n + 1))
done
say "addr6=$(ip -6 addr show dev eth0 scope site | awk '/inet6/ {{ print $2; exit }}')"
say mark=ready
wait $got
say "v4.from=$(accepted /tmp/iperf5202)"
say "v6.from=$(accepted /tmp/iperf5204)"
say "got.bytes=$(wc -c < /tmp/got)"
say "got.sha=$(sha256sum < /tmp/got | cut -d' ' -f1)"
"#
        )
}

/// Seven consecutive ports free on 127.0.0.1 for both TCP and UDP, the last also on ::1 for
/// TCP, at the time of asking (from [`hostsrv::candidate_ports`], below the ephemeral range).
fn free_ports() -> u16 {
    hostsrv::candidate_ports()
        .find(|&first| {
            (first..first + 7).all(|p| {
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            }) && std::net::TcpListener::bind(("::1", first + 6)).is_ok()
        })
        .expect("seven consecutive free ports on 127.0.0.1 (and ::1)")
}

/// The value of the guest's `fwd: KEY=VALUE` console line.
fn said(console: &str, key: &str) -> Option<String> {
    let prefix = format!("{SAY}{key}=");
    console
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
}

/// A fresh directory under the temporary directory whose path has no `-`: QEMU's
/// `hostfwd=unix:PATH-:PORT` ends the path at the first `-` (and so does our parser). Removed
/// on drop.
struct DashlessDir(std::path::PathBuf);

impl DashlessDir {
    fn new(label: &str) -> DashlessDir {
        let path = std::path::Path::new("/tmp").join(format!("vnu_{label}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        DashlessDir(path)
    }
}

impl Drop for DashlessDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads what the guest sends on `conn` (give it a read timeout), up to [`DOWNLOAD`] bytes.
fn download(mut conn: impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < DOWNLOAD {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Runs the host's iperf3 client against the forwarded port; its `receiver` line.
fn iperf(host: &str, port: u16, extra: &[&str], backend: &Backend) -> String {
    let mut iperf3 = Command::new("iperf3");
    iperf3
        .args(["-c", host, "-p", &port.to_string(), "-t", "2", "-f", "m"])
        .args(extra);
    iperf_line(iperf3, backend)
}

/// Runs an iperf3 client command; its `receiver` line.
fn iperf_line(mut iperf3: Command, backend: &Backend) -> String {
    let out = iperf3.output().expect("running iperf3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match text.lines().find(|l| l.contains("receiver")) {
        Some(line) => line.to_owned(),
        None => panic!(
            "{iperf3:?} through the forward gave no result:\n{text}\nbackend log:\n{}",
            vnu_tests::tail(&backend.log(), 20)
        ),
    }
}

/// Mbit/s of an iperf3 `receiver` line (`-f m`).
fn mbit_s(line: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Mbits/sec")
        .unwrap_or_else(|| panic!("no rate in `{line}`"));
    words[at - 1].parse().expect("a rate")
}

fn forwards_reach_guest_services(link: Link) {
    if !e2e_ready() || !require_program("iperf3", "iperf3") {
        return;
    }
    let port = free_ports();
    let rules = [
        format!("hostfwd=tcp:127.0.0.1:{port}-:5201"),
        format!("hostfwd=udp:127.0.0.1:{port}-:5201"),
        format!("hostfwd=tcp:127.0.0.1:{}-:5301", port + 1),
        format!("hostfwd=tcp:127.0.0.1:{}-:5300", port + 2),
        format!("hostfwd=tcp:127.0.0.1:{}-:5999", port + 3),
        format!("hostfwd=tcp:127.0.0.1:{}-:5202", port + 4),
        format!("hostfwd=tcp:127.0.0.1:{}-:5203", port + 5),
    ];
    let v6_rule = format!("::1/{}:5204", port + 6);
    let unix_dir = DashlessDir::new(&format!("fwd{link}"));
    let unix_path = unix_dir.0.join("fwd.sock");
    let unix_rule = format!("hostfwd=unix:{}-:5302", unix_path.display());
    let mut args = vec!["-v", "-t", v6_rule.as_str(), "--slirp", unix_rule.as_str()];
    for rule in &rules {
        args.extend(["--slirp", rule.as_str()]);
    }
    let mut backend = Backend::start_link(link, &args).expect("starting the backend");
    let opts = GuestOpts::new(&format!("forward-{link}"), backend.net())
        .script(&guest_script())
        .v6wait(20);
    let mut guest = spawn_slotted(&opts).expect("starting the guest");
    let ready = format!("{SAY}mark=ready");
    if let Err(e) = guest.wait_for_line(&ready, Duration::from_secs(120)) {
        panic!("{e}\nbackend log:\n{}", backend.log());
    }
    let context = |backend: &Backend, console: &str| {
        format!(
            "\nguest console:\n{}\nbackend log:\n{}",
            vnu_tests::tail(console, 30),
            vnu_tests::tail(&backend.log(), 20)
        )
    };

    // Guest to host: the blob `nc -l` sends on 5301, and on 5302 through the unix socket
    // forward, whole and unchanged.
    let minute = Some(Duration::from_secs(60));
    let tcp = TcpStream::connect(("127.0.0.1", port + 1)).expect("connect to the forward");
    tcp.set_read_timeout(minute).expect("read timeout");
    let over_tcp = download(tcp);
    let unix = UnixStream::connect(&unix_path).expect("connect to the unix socket forward");
    unix.set_read_timeout(minute).expect("read timeout");
    let over_unix = download(unix);
    let console = guest.console();
    let guest_sha = said(&console, "blob.sha").expect("the guest's blob.sha");
    for (how, got) in [("TCP", &over_tcp), ("unix socket", &over_unix)] {
        assert_eq!(
            got.len(),
            DOWNLOAD,
            "bytes received from the guest's nc over the {how} forward{}",
            context(&backend, &console)
        );
        assert_eq!(
            sha256_16(got),
            guest_sha[..16],
            "the download over the {how} forward differs from what the guest sent{}",
            context(&backend, &console)
        );
    }

    // TCP both ways and UDP through iperf3 (its UDP test needs the guest's replies to come
    // back from the forwarded port), each against a server of its own.
    let to_guest = iperf("127.0.0.1", port + 4, &[], &backend);
    let from_guest = iperf("127.0.0.1", port + 5, &["-R"], &backend);
    let udp = iperf(
        "127.0.0.1",
        port,
        &["-u", "-b", "10M", "-l", "1200"],
        &backend,
    );
    let over_v6 = iperf("::1", port + 6, &[], &backend);
    eprintln!("forward over {link}: TCP to the guest: {to_guest}");
    eprintln!("forward over {link}: TCP from the guest: {from_guest}");
    eprintln!("forward over {link}: UDP to the guest: {udp}");
    assert!(mbit_s(&to_guest) > 10.0, "TCP to the guest: {to_guest}");
    assert!(
        mbit_s(&from_guest) > 10.0,
        "TCP from the guest: {from_guest}"
    );
    assert!(mbit_s(&udp) > 5.0, "UDP to the guest at 10 Mbit/s: {udp}");
    assert!(
        mbit_s(&over_v6) > 10.0,
        "TCP over IPv6 to the guest: {over_v6}"
    );

    // Refused: the backend accepts first (as slirp does); the guest's RST ends the connection.
    let mut refused = TcpStream::connect(("127.0.0.1", port + 3)).expect("connect to the forward");
    refused.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let started = Instant::now();
    let outcome = refused.read(&mut [0u8; 16]);
    assert!(
        matches!(&outcome, Ok(0))
            || outcome
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a connection to a guest port nobody listens on: {outcome:?} after {:.1?}",
        started.elapsed()
    );

    // Host to guest: 1 MiB to 5300; the guest hashes it and its script ends.
    let data = blob(UPLOAD);
    let mut conn = TcpStream::connect(("127.0.0.1", port + 2)).expect("connect to the forward");
    conn.write_all(&data).expect("upload to the guest");
    conn.shutdown(Shutdown::Write).ok();
    let run = guest.wait();
    let log = backend.log();
    let run = run.unwrap_or_else(|e| panic!("{e}\nbackend log:\n{log}"));
    let console = run.console.clone();
    assert_eq!(
        said(&console, "got.bytes").as_deref(),
        Some(UPLOAD.to_string().as_str()),
        "bytes the guest received{}",
        context(&backend, &console)
    );
    assert_eq!(
        said(&console, "got.sha").map(|s| s[..16].to_owned()),
        Some(sha256_16(&data)),
        "the upload differs from what the host sent{}",
        context(&backend, &console)
    );
    drop(conn);
    // Whom the guest saw: the gateway of each family for the host's loopback.
    assert_eq!(
        said(&console, "v4.from").as_deref(),
        Some("10.0.2.2"),
        "whom the guest saw connecting from 127.0.0.1{}",
        context(&backend, &console)
    );
    assert_eq!(
        said(&console, "v6.from").as_deref(),
        Some("fec0::2"),
        "whom the guest saw connecting from ::1 (10.0.2.2: the forward went to its IPv4 \
         address){}",
        context(&backend, &console)
    );
    let addr6 = said(&console, "addr6").unwrap_or_default();
    let addr6 = addr6.split('/').next().unwrap_or_default();
    assert!(
        !addr6.is_empty() && backend.log().contains(&format!("comes to [{addr6}]:5204")),
        "the IPv6 forward did not go to the guest's SLAAC address {addr6:?}{}",
        context(&backend, &console)
    );
    // QEMU is gone: the backend logs the connection's counters.
    let summary = backend.connection_summary(Duration::from_secs(10));
    let log = backend.log();
    assert!(backend.is_running(), "the backend exited:\n{log}");
    let refused = summary.and_then(|s| vnu_tests::summary_counter(&s, "tcp.guest_refused"));
    assert_eq!(
        refused,
        Some(1),
        "forwarded connections the guest refused, by the backend's count (only the one to \
         5999 should be):\n{}",
        vnu_tests::tail(&log, 5)
    );
}

both_links!(forwards_reach_guest_services);

/// slirp's `restrict=on` cuts the guest off from everything but the emulated hosts, yet its
/// forwards still work: a host connection reaches the guest's server and the data flows.
#[test]
fn forwards_work_under_restrict() {
    if !e2e_ready() || !require_program("iperf3", "iperf3") {
        return;
    }
    let port = free_ports();
    let opts = format!("restrict=on,hostfwd=tcp:127.0.0.1:{port}-:5202");
    let backend = Backend::start_link(Link::Ring, &["--slirp", &opts]).expect("the backend");
    let script = prelude()
        + r#"iperf3 -s -1 -p 5202 > /tmp/iperf 2>&1 &
server=$!
listening 1452 1
say mark=ready
wait $server
say "from=$(accepted /tmp/iperf)"
"#;
    let opts = GuestOpts::new("forward-restrict", backend.net()).script(&script);
    let mut guest = spawn_slotted(&opts).expect("starting the guest");
    if let Err(e) = guest.wait_for_line(&format!("{SAY}mark=ready"), Duration::from_secs(120)) {
        panic!("{e}\nbackend log:\n{}", backend.log());
    }
    let line = iperf("127.0.0.1", port, &[], &backend);
    assert!(
        mbit_s(&line) > 10.0,
        "TCP to the guest under restrict=on: {line}"
    );
    let run = guest.wait().expect("the guest's run");
    assert_eq!(
        said(&run.console, "from").as_deref(),
        Some("10.0.2.2"),
        "whom the guest saw connecting:\n{}",
        vnu_tests::tail(&run.console, 20)
    );
}

/// Runs the backend with `forward_args` until it exits (10 s at most): its exit code and
/// stderr.
fn refused_at_startup(forward_args: &[&str]) -> (Option<i32>, String) {
    let dir = TempDir::new("forward-refused").expect("temp dir");
    let socket = dir.join("vu.sock");
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let mut args = vec!["--socket-path", socket_arg];
    args.extend_from_slice(forward_args);
    let run = run_backend_to_exit(&args, Duration::from_secs(10)).expect("running the backend");
    assert!(!socket.exists(), "the refused backend left its socket");
    (run.status.and_then(|s| s.code()), run.stderr)
}

/// A forwarded port something else holds, or a path taken for a unix socket forward: one line
/// naming it, exit status 2, before serving anything.
#[test]
fn unusable_forwards_are_one_line_startup_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let spec = format!("127.0.0.1/{port}:22");
    let (code, stderr) = refused_at_startup(&["-t", &spec]);
    assert_eq!(code, Some(2), "-t {spec} with the port taken:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("port forward tcp 127.0.0.1:{port}: cannot listen")),
        "{stderr}"
    );
    // A file of the user's where the unix socket forward would go: refused, and left alone.
    let dir = DashlessDir::new("taken");
    let path = dir.0.join("fwd.sock");
    std::fs::write(&path, b"mine").expect("write the user's file");
    let rule = format!("hostfwd=unix:{}-:22", path.display());
    let (code, stderr) = refused_at_startup(&["--slirp", &rule]);
    assert_eq!(code, Some(2), "{rule} over a file:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "port forward from unix:{}: cannot listen",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).expect("the file is still there"),
        b"mine"
    );
}

/// passt's `-t all -u all`: every port outside the ephemeral range forwarded, thousands of
/// sockets. In a namespace of the test's own (nothing listens beyond it) whose ephemeral range
/// starts at 6001, so that the 6000 ports below it fit this machine's open-file limit (20000
/// here; the host's own range leaves 37303 ports): one dual-stack TCP socket a port and two
/// UDP sockets. Three of them reach the guest's iperf3 servers, TCP over both families and
/// UDP; a port of the ephemeral range stays the host's.
#[test]
fn passt_all_forwards_every_port_outside_the_ephemeral_range() {
    if !e2e_ready() || !netns::ready() || !require_program("iperf3", "iperf3") {
        return;
    }
    const PORTS: usize = 6000;
    let ns = Netns::new("fa").expect("a namespace");
    ns.sysctl(
        "net.ipv4.ip_local_port_range",
        &format!("{} 65535", PORTS + 1),
    )
    .expect("setting the namespace's ephemeral ports");
    let backend = Backend::start_in(&ns, &["-t", "all", "-u", "all"]).expect("the backend");
    let pid = backend.pid();
    let count = |table: &str| {
        let ports = netns::bound_ports(pid, table);
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        (ports.len(), distinct.len(), distinct.last().copied())
    };
    // Every port from 1 to 6000, once each: TCP on [::] only (IPv4 peers come to it too),
    // UDP on 0.0.0.0 and on [::].
    assert_eq!(
        count("tcp6"),
        (PORTS, PORTS, Some(PORTS as u16)),
        "TCP listeners"
    );
    assert_eq!(count("tcp"), (0, 0, None), "IPv4-only TCP listeners");
    for table in ["udp", "udp6"] {
        assert_eq!(
            count(table),
            (PORTS, PORTS, Some(PORTS as u16)),
            "{table} sockets"
        );
    }
    let fds = netns::fd_count(pid).expect("the backend's descriptors");
    assert!(fds >= 3 * PORTS, "the backend holds {fds} descriptors");

    let script = prelude()
        + r#"for p in 5201 5202 5203; do iperf3 -s -1 -p $p > /tmp/iperf$p 2>&1 & done
listening '1451|1452|1453' 3
n=0
while [ $n -lt 100 ] && ! ip -6 addr show dev eth0 scope site | grep inet6 | grep -qv tentative; do
  sleep 0.1; n=$((n + 1))
done
say mark=ready
wait
say "v4.from=$(accepted /tmp/iperf5201)"
say "v6.from=$(accepted /tmp/iperf5202)"
say "udp.from=$(accepted /tmp/iperf5203)"
"#;
    let opts = GuestOpts::new("forward-all", backend.net())
        .script(&script)
        .v6wait(20);
    let mut guest = netns::spawn_guest(&ns, &opts).expect("starting the guest");
    if let Err(e) = guest.wait_for_line(&format!("{SAY}mark=ready"), Duration::from_secs(120)) {
        panic!("{e}\nbackend log:\n{}", backend.log());
    }
    let client = |host: &str, port: u16, extra: &[&str]| {
        let mut iperf3 = ns.command("iperf3");
        iperf3
            .args(["-c", host, "-p", &port.to_string(), "-t", "2", "-f", "m"])
            .args(extra);
        iperf_line(iperf3, &backend)
    };
    let v4 = client("127.0.0.1", 5201, &[]);
    let v6 = client("::1", 5202, &[]);
    let udp = client("127.0.0.1", 5203, &["-u", "-b", "10M", "-l", "1200"]);
    eprintln!("all ports: TCP over IPv4 {v4}; over IPv6 {v6}; UDP {udp}");
    assert!(mbit_s(&v4) > 10.0, "TCP to the guest over IPv4: {v4}");
    assert!(mbit_s(&v6) > 10.0, "TCP to the guest over IPv6: {v6}");
    assert!(mbit_s(&udp) > 5.0, "UDP to the guest at 10 Mbit/s: {udp}");
    // The ephemeral range is left to the host's own connections.
    let ephemeral = ns
        .command("sh")
        .args(["-c", "echo | nc -w 2 127.0.0.1 40000; echo status=$?"])
        .output()
        .expect("running nc");
    let ephemeral = String::from_utf8_lossy(&ephemeral.stdout).into_owned();
    assert!(
        !ephemeral.contains("status=0"),
        "a connection to ephemeral port 40000 went somewhere: {ephemeral}"
    );

    let run = guest.wait().expect("the guest's run");
    let console = &run.console;
    for (key, want) in [
        ("v4.from", "10.0.2.2"),
        ("v6.from", "fec0::2"),
        ("udp.from", "10.0.2.2"),
    ] {
        assert_eq!(
            said(console, key).as_deref(),
            Some(want),
            "{key}: whom the guest saw connecting\n{}",
            vnu_tests::tail(console, 20)
        );
    }
}

/// More forwarded ports than the open-file limit allows: one line saying how many sockets
/// they need and what the limit is, exit status 2, before anything is bound.
#[test]
fn forwards_beyond_the_open_file_limit_are_one_line_startup_errors() {
    if !require_program("prlimit", "util-linux") {
        return;
    }
    let dir = TempDir::new("forward-limit").expect("temp dir");
    let socket = dir.join("vu.sock");
    let bin = vnu_tests::backend_bin().expect("the backend");
    let run = Command::new("prlimit")
        .arg("--nofile=2000:2000")
        .arg(&bin)
        .arg("--socket-path")
        .arg(&socket)
        .args(["-t", "127.0.0.1/10000-12999"])
        .output()
        .expect("running the backend under prlimit");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "vhost-net-user: port forwards need 3000 sockets, more than the open-file limit of \
         2000 allows (raise it with ulimit -n, or forward fewer ports)"
    );
    assert!(!socket.exists(), "the refused backend left its socket");
}
