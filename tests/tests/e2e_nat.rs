//! End-to-end NAT: a guest behind the backend reaches a remote host and the host's loopback,
//! resolves names through the DNS relay, pings, and opens many connections, all inside private
//! network namespaces.
//!
//! Both tests run over both links ([`Link`]): the vhost-user ring (`--socket-path`, tests named
//! `NAME::over_ring`) and the stream link (`--stream`, QEMU `-netdev stream`,
//! `NAME::over_stream`). Each is one function taking the link; [`both_links!`] declares its two
//! tests, and the checks are the same for both.
//!
//! Topology (built per test by [`Lab::new`]; names carry the test's pid):
//!
//! ```text
//!  netns H: backend + QEMU (guest 10.0.2.15)        netns R: the remote test host
//!    198.51.100.2/24, default via R  ── veth ──      198.51.100.1/24
//!    127.0.0.1: HTTP (4 MiB blob), TCP sink          HTTP (16 MiB blob), DNS (UDP+TCP),
//!    ping_group_range open (ping sockets)            TCP sink, gather server, iperf3 -s
//! ```
//!
//! The backend relays DNS to R through `--resolv-conf`, so nothing leaves the machine. The
//! servers are `tests/servers/nat_servers.py` and `iperf3 -s`. Expected digests are computed on
//! the host; the guest reports `key=value` lines that the checks compare with them. Measured
//! figures (MB/s, Mbit/s, fd counts) are printed even when the tests pass.
//!
//! The tests take turns ([`serial`]): each boots one guest (TCG), and the throughput figures and
//! the 0%-loss UDP check want the CPU to themselves. The connection tests need it too: run
//! beside each other, one over the stream link once left 8 flows open 8 s after its churn
//! (the backend retransmitting to a guest slowed by the other), failing the leak check.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vnu_tests::netns::{self, Netns, NsProcess, boot_in, spawn_guest, veth};
use vnu_tests::{
    Backend, GuestOpts, Link, TempDir, both_links, e2e_ready, require_program, tail, workspace_root,
};

/// The remote test host (netns R) and the host namespace's end of the veth.
const REMOTE: &str = "198.51.100.1";
const HOST_VETH: &str = "198.51.100.2";
/// The guest's view of the host (its loopback) and of the DNS relay.
const GATEWAY: &str = "10.0.2.2";
const DNS_RELAY: &str = "10.0.2.3";
/// The one name the test DNS server knows, and its address.
const DNS_NAME: &str = "vnu-nat.test";
const DNS_ANSWER: &str = "203.0.113.77";

const REMOTE_HTTP_PORT: u16 = 8080;
const REMOTE_SINK_PORT: u16 = 9000;
const REMOTE_GATHER_PORT: u16 = 9001;
const IPERF_PORT: u16 = 5201;
const LOCAL_HTTP_PORT: u16 = 8081;
const LOCAL_SINK_PORT: u16 = 9100;
/// Nothing listens here on the host's loopback: connections are refused.
const LOCAL_CLOSED_PORT: u16 = 9199;

const REMOTE_BLOB: usize = 16 << 20;
const LOCAL_BLOB: usize = 4 << 20;
const UPLOAD: usize = 8 << 20;
/// UDP payload of the datagrams the remote host sends the guest in the fragmentation check:
/// above the 1472 bytes one 1500-byte frame carries.
const BIG_DATAGRAM: usize = 2000;
/// Connections held open at once by the gather server.
const CONCURRENT: usize = 200;
/// Short connections in the flow-leak check, per kind (x2 loops each), and refused ones.
const CHURN_PER_LOOP: usize = 500;
const CHURN_REFUSED: usize = 100;
/// TCP retransmissions the guest may need over the whole churn (the link loses nothing).
const CHURN_RETRANS_LIMIT: usize = 10;
/// TCP retransmissions the guest may need over the transfers, besides those a short write
/// causes: the link loses nothing.
const TRANSFER_RETRANS_LIMIT: usize = 10;
/// Writes the host socket took short, at most: each makes the guest resend the rest of its
/// flight (the backend drops what follows the gap), and a window that overfills the socket
/// makes them many. One is allowed: on a loaded machine (three CI runs on 2026-12-02, over the
/// stream link) one write in a run came short, and the guest resent 26 to 56 segments. Why is
/// not known yet; the backend logs the socket's memory at each.
const SHORT_WRITES_LIMIT: u64 = 1;
/// The file the churn's HTTP requests fetch from the host's loopback, and its content.
const SMALL_FILE: &str = "small";
const SMALL_CONTENT: &str = "small-file";

/// What the DNS server answers over TCP to the guest's query (ID 0x1234, RD, A vnu-nat.test):
/// length 46, flags 0x8580 (response, authoritative, RD, RA), one answer 203.0.113.77, TTL 60.
const DNS_TCP_REPLY_HEX: &str = "002e12348580000100010000000007766e752d6e617404746573740000010001\
                                 c00c000100010000003c0004cb00714d";

/// fds the backend may hold beyond its baseline once the churn's flows have closed.
const FD_MARGIN: usize = 2;
/// Anonymous memory (heap) the backend may gain over the churn.
const ANON_GROWTH_LIMIT_KIB: u64 = 16 * 1024;
/// Resident memory it may gain (this also counts the guest memory it touched).
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// Prefix of the `key=value` lines the guest scripts write straight to /dev/console (`say`). The
/// harness's `run: ` lines pass through a pipe and reach the console only when the script ends;
/// these show as they happen, also when a guest hangs until its timeout.
const SAY: &str = "nat: ";

/// The NAT tests run one at a time (see the module comment).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready() -> bool {
    e2e_ready()
        && netns::ready()
        && require_program("python3", "python3")
        && require_program("iperf3", "iperf3")
        && require_program("sha256sum", "coreutils")
}

/// Writes uncaptured, so the figures show in `cargo test` output even when the test passes.
fn figure(link: Link, line: &str) {
    let _ = writeln!(std::io::stderr(), "nat figures ({link} link): {line}");
}

/// `len` random bytes in `path`; returns their sha256 (hex), computed by `sha256sum`.
fn random_file(path: &Path, len: usize) -> String {
    let mut data = vec![0u8; len];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("opening /dev/urandom");
    std::io::Read::read_exact(&mut urandom, &mut data).expect("reading /dev/urandom");
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    sha256_of(path)
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The two namespaces, their veth, the servers and the files they serve. Dropping it stops the
/// servers and deletes the namespaces (fields drop in order: servers first).
struct Lab {
    servers: Vec<(String, NsProcess)>,
    host: Netns,
    remote: Netns,
    dir: TempDir,
    remote_sha: String,
    local_sha: String,
    resolv_conf: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = TempDir::new("nat").expect("temp dir");
        let remote = Netns::new("r").expect("remote namespace");
        let host = Netns::new("h").expect("host namespace");
        veth(
            &remote,
            &format!("{REMOTE}/24"),
            &host,
            &format!("{HOST_VETH}/24"),
        )
        .expect("veth pair");
        host.ip(&["route", "add", "default", "via", REMOTE])
            .expect("default route");
        // Ping sockets for every group: the backend forwards echo requests through them.
        host.sysctl("net.ipv4.ping_group_range", "0 2147483647")
            .expect("ping_group_range");

        let remote_www = dir.join("remote-www");
        let local_www = dir.join("local-www");
        for d in [&remote_www, &local_www] {
            std::fs::create_dir_all(d).expect("www dir");
        }
        let remote_sha = random_file(&remote_www.join("blob16"), REMOTE_BLOB);
        let local_sha = random_file(&local_www.join("blob4"), LOCAL_BLOB);
        std::fs::write(local_www.join(SMALL_FILE), SMALL_CONTENT).expect("small file");
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, format!("nameserver {REMOTE}\n")).expect("resolv.conf");

        let script = workspace_root().join("tests/servers/nat_servers.py");
        let script = script.to_str().expect("utf-8 path").to_owned();
        let mut lab = Lab {
            servers: Vec::new(),
            host,
            remote,
            dir,
            remote_sha,
            local_sha,
            resolv_conf,
        };
        let remote_args = [
            script.clone(),
            format!("http:{REMOTE}:{REMOTE_HTTP_PORT}:{}", remote_www.display()),
            format!("dns:{REMOTE}:53:{DNS_NAME}:{DNS_ANSWER}"),
            format!("sink:{REMOTE}:{REMOTE_SINK_PORT}"),
            format!("gather:{REMOTE}:{REMOTE_GATHER_PORT}:{CONCURRENT}"),
        ];
        let local_args = [
            script,
            format!("http:127.0.0.1:{LOCAL_HTTP_PORT}:{}", local_www.display()),
            format!("sink:127.0.0.1:{LOCAL_SINK_PORT}"),
        ];
        let iperf_args = [
            "-s".to_owned(),
            "-B".to_owned(),
            REMOTE.to_owned(),
            "-p".to_owned(),
            IPERF_PORT.to_string(),
        ];
        lab.start(
            "remote servers",
            Which::Remote,
            "python3",
            &remote_args,
            &[REMOTE_HTTP_PORT, 53, REMOTE_SINK_PORT, REMOTE_GATHER_PORT],
            &[53],
        );
        lab.start(
            "host loopback servers",
            Which::Host,
            "python3",
            &local_args,
            &[LOCAL_HTTP_PORT, LOCAL_SINK_PORT],
            &[],
        );
        lab.start(
            "iperf3 server",
            Which::Remote,
            "iperf3",
            &iperf_args,
            &[IPERF_PORT],
            &[],
        );
        lab
    }

    fn start(
        &mut self,
        label: &str,
        which: Which,
        program: &str,
        args: &[String],
        tcp: &[u16],
        udp: &[u16],
    ) {
        let ns = match which {
            Which::Remote => &self.remote,
            Which::Host => &self.host,
        };
        let log = self.dir.join(&format!("{}.log", label.replace(' ', "-")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = ns
            .spawn(program, &args, &log)
            .unwrap_or_else(|e| panic!("starting the {label}: {e}"));
        process
            .wait_listening(tcp, udp, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("the {label} did not come up: {e}"));
        self.servers.push((label.to_owned(), process));
    }

    /// The backend in the host namespace, serving `link`, relaying DNS to the remote host.
    fn backend(&self, link: Link) -> Backend {
        let resolv = self.resolv_conf.to_str().expect("utf-8 path");
        Backend::start_link_in(link, &self.host, &["--resolv-conf", resolv])
            .expect("starting the backend")
    }

    /// The backend's log tail and the servers' logs, for failure messages.
    fn context(&self, backend: &mut Backend) -> String {
        let mut out = String::new();
        if let Some(status) = backend.try_exit() {
            out.push_str(&format!("the backend EXITED: {status}\n"));
        }
        out.push_str(&format!(
            "backend log (last 40 lines):\n{}\n",
            tail(&backend.log(), 40)
        ));
        for (label, server) in &self.servers {
            out.push_str(&format!(
                "{label} log (last 10 lines):\n{}\n",
                tail(&server.log(), 10)
            ));
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Which {
    Remote,
    Host,
}

/// `key=value` pairs among `lines` (the last value of a repeated key); other lines are ignored.
fn key_values<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    lines
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            let is_key = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
            is_key.then(|| (k.to_owned(), v.trim_end().to_owned()))
        })
        .collect()
}

/// Failed checks, reported together with what the guest reported and the logs.
struct Checks {
    guest: String,
    values: BTreeMap<String, String>,
    report: String,
    failures: Vec<String>,
}

impl Checks {
    /// Checks on what the guest wrote straight to its console as `PREFIX key=value` lines.
    fn of_console(guest: &str, console: &str, prefix: &str) -> Checks {
        let lines: Vec<&str> = console
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect();
        Checks {
            guest: guest.to_owned(),
            values: key_values(lines.iter().copied()),
            report: lines.iter().map(|l| format!("  {prefix}{l}\n")).collect(),
            failures: Vec::new(),
        }
    }

    /// The value the guest reported for `key`, or "" (and a failure) if it reported none.
    fn get(&mut self, key: &str) -> String {
        match self.values.get(key) {
            Some(v) => v.clone(),
            None => {
                self.failures
                    .push(format!("{key}: the guest did not report it"));
                String::new()
            }
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// The guest's count under `key` is at most `limit`; `what` names the count and the cause.
    /// Returns the count as reported.
    fn expect_at_most(&mut self, key: &str, limit: usize, what: &str) -> String {
        let got = self.get(key);
        self.check(got.parse::<usize>().is_ok_and(|n| n <= limit), || {
            format!("{what}: {key} is {got:?}, at most {limit} expected")
        });
        got
    }

    fn expect_eq(&mut self, key: &str, want: &str, what: &str) {
        let got = self.get(key);
        self.check(got == want, || {
            format!("{what}: {key} is {got:?}, expected {want:?}")
        });
    }

    /// Seconds the guest measured for `key` (`KEY.secs`).
    fn secs(&mut self, key: &str) -> Option<f64> {
        let v = self.get(&format!("{key}.secs"));
        v.parse::<f64>().ok().filter(|s| *s > 0.0)
    }

    fn finish(self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "guest `{}`: {} check(s) failed:\n  {}\nguest report:\n{}\n{context}",
            self.guest,
            self.failures.len(),
            self.failures.join("\n  "),
            self.report
        );
    }
}

fn mb_per_s(bytes: usize, secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!(
            "{:.1} MB/s ({bytes} bytes in {s:.3} s)",
            bytes as f64 / 1e6 / s
        ),
        None => "- MB/s (no time)".to_owned(),
    }
}

/// What an iperf3 summary line (`... receiver`) says: the rate in Mbit/s and, for UDP, the
/// lost and total datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IperfSummary {
    mbit_s: f64,
    lost_total: Option<(u64, u64)>,
}

fn parse_iperf(line: &str) -> Option<IperfSummary> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let unit = tokens.iter().position(|t| t.ends_with("bits/sec"))?;
    let value: f64 = tokens.get(unit.checked_sub(1)?)?.parse().ok()?;
    let scale = match tokens[unit].chars().next()? {
        'G' => 1000.0,
        'M' => 1.0,
        'K' => 0.001,
        'b' => 0.000_001,
        _ => return None,
    };
    let lost_total = tokens.iter().find_map(|t| {
        let (lost, total) = t.split_once('/')?;
        Some((lost.parse().ok()?, total.parse().ok()?))
    });
    Some(IperfSummary {
        mbit_s: value * scale,
        lost_total,
    })
}

/// The guest script of [`nat_transfers_dns_ping_and_iperf`]. Every step is bounded by `timeout`
/// and reports `nat: KEY.*=` lines through `say` (see [`connections_script`]), so that a guest
/// that hangs still shows how far it got.
fn transfer_script() -> String {
    format!(
        r#"R={REMOTE}
say() {{ echo "{SAY}$*" > /dev/console; }}
# sayfile PREFIX FILE: say each line of FILE.
sayfile() {{ while read -r l; do say "$1$l"; done < "$2"; }}
# up: monotonic nanoseconds (busybox date has no %N); secs A B: B - A in seconds.
up() {{ awk 'NR == 3 {{ print $3; exit }}' /proc/timer_list; }}
secs() {{ awk -v a="$1" -v b="$2" 'BEGIN {{ printf "%.3f", (b - a) / 1e9 }}'; }}
# fetch KEY URL: download to a file, report status, size, sha256 and time.
fetch() {{
  s=$(up); timeout 60 wget -q -O /tmp/f "$2"; rc=$?; e=$(up)
  say "$1.rc=$rc"
  say "$1.bytes=$(wc -c < /tmp/f)"
  say "$1.sha=$(sha256sum < /tmp/f | cut -d' ' -f1)"
  say "$1.secs=$(secs $s $e)"
  rm -f /tmp/f
}}
fetch http_remote http://$R:{REMOTE_HTTP_PORT}/blob16
fetch http_gateway http://{GATEWAY}:{LOCAL_HTTP_PORT}/blob4

head -c {UPLOAD} /dev/urandom > /tmp/up
say "upload.local=$(wc -c < /tmp/up) $(sha256sum < /tmp/up | cut -d' ' -f1)"
s=$(up); a=$(timeout 60 nc $R {REMOTE_SINK_PORT} < /tmp/up); rc=$?; e=$(up)
say "upload.rc=$rc"
say "upload.remote=$a"
say "upload.secs=$(secs $s $e)"
rm -f /tmp/up

timeout 10 nslookup {DNS_NAME} {DNS_RELAY} > /tmp/ns 2>&1
say "dns.udp=$(awk '/^Address/ && !/:53$/ && !/#53$/ {{ print $NF }}' /tmp/ns | sort -u | tr '\n' ' ' | sed 's/ $//')"
sayfile "dns.out: " /tmp/ns
timeout 10 nslookup other.{DNS_NAME} {DNS_RELAY} > /tmp/ns 2>&1
grep -q NXDOMAIN /tmp/ns && say "dns.nx=yes" || say "dns.nx=no"
q='\000\036\022\064\001\000\000\001\000\000\000\000\000\000\007vnu-nat\004test\000\000\001\000\001'
say "dns.tcp=$(printf "$q" | timeout 10 nc {DNS_RELAY} 53 | od -An -tx1 | tr -d ' \n')"

timeout 15 ping -c 3 -W 3 $R > /tmp/p 2>&1
say "ping.received=$(awk '/packets transmitted/ {{ print $4 }}' /tmp/p)"
sayfile "ping.out: " /tmp/p

# iperf KEY ARGS...: run a 3 s test, report the summary lines.
iperf() {{
  k=$1; shift
  timeout 20 iperf3 -c $R -p {IPERF_PORT} -t 3 "$@" > /tmp/i 2>&1
  say "$k.rc=$?"
  awk -v k=$k '/ sender$/ {{ print k ".sender=" $0 }} / receiver$/ {{ print k ".receiver=" $0 }}' /tmp/i > /tmp/s
  sayfile "" /tmp/s
  grep -q ' receiver$' /tmp/i || sayfile "$k.out: " /tmp/i
  sleep 1
}}
iperf udp -u -b 20M -l 1200
# Datagrams larger than the MTU toward the guest: they arrive as IPv4 fragments.
iperf udp_big_down -u -R -b 5M -l {BIG_DATAGRAM}
iperf tcp_up
iperf tcp_down -R
# Frames the guest's virtio-net driver dropped (a malformed or half-published RX frame).
say "nic.rx_drops=$(ethtool -S eth0 | awk '/rx_queue_0_drops:/ {{ print $2 }}')"
# TCP segments the guest retransmitted over the whole run.
say "tcp.retrans=$(awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {{ print $13 }}' /proc/net/snmp)"
"#
    )
}

/// Items 1-7 of the NAT list: 16 MiB over HTTP from a remote host and 4 MiB from the host's
/// loopback through the gateway address (sha256 as on the host), an 8 MiB upload (the receiver
/// sees the same size and sha256), DNS over UDP and TCP through the relay address, ping to the
/// remote host, UDP at 20 Mbit/s without loss (and 2000-byte datagrams toward the guest, as
/// IPv4 fragments, without loss), and TCP both ways; at the end the guest's
/// virtio-net driver has dropped no frame.
fn nat_transfers_dns_ping_and_iperf(link: Link) {
    if !ready() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let lab = Lab::new();
    let mut backend = lab.backend(link);
    let name = format!("nat-transfers-{link}");
    let opts = GuestOpts::new(&name, backend.net()).script(&transfer_script());
    let run = boot_in(&lab.host, &opts);
    let context = lab.context(&mut backend);
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    let mut c = Checks::of_console(&run.name, &run.console, SAY);
    c.check(run.run_status() == Some(0), || {
        format!("the guest script exited {:?}", run.run_status())
    });

    for (key, bytes, sha, what) in [
        (
            "http_remote",
            REMOTE_BLOB,
            lab.remote_sha.clone(),
            "HTTP download from the remote host",
        ),
        (
            "http_gateway",
            LOCAL_BLOB,
            lab.local_sha.clone(),
            "HTTP download from host loopback via the gateway address",
        ),
    ] {
        c.expect_eq(&format!("{key}.rc"), "0", what);
        c.expect_eq(&format!("{key}.bytes"), &bytes.to_string(), what);
        c.expect_eq(&format!("{key}.sha"), &sha, what);
        let secs = c.secs(key);
        figure(link, &format!("{what}: {}", mb_per_s(bytes, secs)));
    }

    let local = c.get("upload.local");
    let remote = c.get("upload.remote");
    c.expect_eq("upload.rc", "0", "nc upload to the remote sink");
    c.check(local.starts_with(&format!("{UPLOAD} ")), || {
        format!("the guest's upload file is not {UPLOAD} bytes: {local:?}")
    });
    c.check(remote == local, || {
        format!(
            "nc upload: the remote sink received {remote:?} (bytes sha256), the guest sent \
             {local:?}"
        )
    });
    let secs = c.secs("upload");
    figure(
        link,
        &format!("nc upload to the remote host: {}", mb_per_s(UPLOAD, secs)),
    );

    c.expect_eq("dns.udp", DNS_ANSWER, "DNS over UDP via 10.0.2.3");
    c.expect_eq(
        "dns.nx",
        "yes",
        "DNS over UDP via 10.0.2.3, unknown name (NXDOMAIN relayed)",
    );
    c.expect_eq("dns.tcp", DNS_TCP_REPLY_HEX, "DNS over TCP via 10.0.2.3");
    c.expect_eq("ping.received", "3", "ping to the remote host (3 sent)");

    for (key, what) in [
        ("udp", "iperf3 -u -b 20M to the remote host"),
        (
            "udp_big_down",
            "iperf3 -u -R -b 5M -l 2000 (datagrams above the MTU) from the remote host",
        ),
        ("tcp_up", "iperf3 TCP guest -> remote"),
        ("tcp_down", "iperf3 TCP remote -> guest (-R)"),
    ] {
        c.expect_eq(&format!("{key}.rc"), "0", what);
        let line = c.get(&format!("{key}.receiver"));
        let Some(summary) = parse_iperf(&line) else {
            c.check(false, || {
                format!("{what}: no receiver summary ({key}.receiver={line:?})")
            });
            continue;
        };
        c.check(summary.mbit_s > 0.0, || {
            format!("{what}: rate {} Mbit/s", summary.mbit_s)
        });
        match summary.lost_total {
            Some((lost, total)) if key.starts_with("udp") => {
                c.check(lost == 0 && total > 0, || {
                    format!("{what}: {lost} of {total} datagrams lost (expected none): {line}")
                });
                figure(
                    link,
                    &format!(
                        "{what}: {:.1} Mbit/s at the receiver, {lost}/{total} lost",
                        summary.mbit_s
                    ),
                );
            }
            None if key.starts_with("udp") => c.check(false, || {
                format!("{what}: no lost/total in the receiver summary: {line}")
            }),
            _ => figure(link, &format!("{what}: {:.0} Mbit/s", summary.mbit_s)),
        }
    }
    c.expect_eq(
        "nic.rx_drops",
        "0",
        "frames the guest's virtio-net driver dropped after all transfers",
    );
    // QEMU is gone: the backend's counters say how many segments it had to drop.
    let summary = backend.connection_summary(Duration::from_secs(10));
    let counter = |name| {
        summary
            .as_deref()
            .and_then(|s| vnu_tests::summary_counter(s, name))
    };
    let short_writes = counter("tcp.short_writes");
    // A summary without the count fails the test rather than tightening the limit below.
    let out_of_order = counter("tcp.out_of_order");
    c.check(out_of_order.is_some(), || {
        format!("no tcp.out_of_order in the backend's connection summary: {summary:?}")
    });
    let dropped = out_of_order.unwrap_or(0);
    c.check(
        short_writes.is_some_and(|n| n <= SHORT_WRITES_LIMIT),
        || {
            format!(
                "writes the host socket took short (the backend offered the guest a window the \
             socket had no room for): {short_writes:?}, at most {SHORT_WRITES_LIMIT} expected"
            )
        },
    );
    let retrans = c.expect_at_most(
        "tcp.retrans",
        TRANSFER_RETRANS_LIMIT + dropped as usize,
        "TCP segments the guest retransmitted over the transfers, beyond 10 and the segments \
         the backend dropped after a gap",
    );
    figure(
        link,
        &format!(
            "TCP segments the guest retransmitted over the run: {retrans} \
             (short writes {short_writes:?}, segments dropped after them {dropped})"
        ),
    );
    // Shown even when within the limit: what the socket had is the clue to why.
    for line in backend
        .log()
        .lines()
        .filter(|l| l.contains("the socket took"))
    {
        figure(link, &format!("short write: {line}"));
    }
    let context = lab.context(&mut backend);
    c.check(backend.is_running(), || "the backend exited".to_owned());
    c.finish(&context);
    figure(
        link,
        &format!(
            "transfers test took {:.1?} (guest {:.1?})",
            started.elapsed(),
            run.elapsed
        ),
    );
}

both_links!(nat_transfers_dns_ping_and_iperf);

/// The guest script of [`nat_many_connections_and_no_flow_leak`]. It reports through `say`
/// (see [`SAY`]); the test watches for `mark=start` and `mark=end` as they happen. After
/// `mark=end` the guest idles until the test stops it.
fn connections_script() -> String {
    let empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    format!(
        r#"R={REMOTE}
say() {{ echo "{SAY}$*" > /dev/console; }}
# up: monotonic nanoseconds (busybox date has no %N); secs A B: B - A in seconds.
up() {{ awk 'NR == 3 {{ print $3; exit }}' /proc/timer_list; }}
secs() {{ awk -v a="$1" -v b="$2" 'BEGIN {{ printf "%.3f", (b - a) / 1e9 }}'; }}
say mark=start
sleep 2

# {CONCURRENT} connections at once: the gather server answers none until all are in.
mkdir -p /tmp/c
s=$(up)
i=0
while [ $i -lt {CONCURRENT} ]; do
  timeout 100 nc $R {REMOTE_GATHER_PORT} < /dev/null > /tmp/c/$i 2>&1 &
  i=$((i + 1))
done
wait
e=$(up)
say "many.secs=$(secs $s $e)"
say "many.ok=$(cat /tmp/c/* | grep -c '^ok ')"
say "many.distinct=$(cat /tmp/c/* | grep '^ok ' | sort -u | wc -l)"
cat /tmp/c/* | grep -v '^ok ' | sort | uniq -c | head -5 | while read -r l; do say "many.other: $l"; done

# Churn: short connections to the host's loopback through the gateway address.
# The guest closes first (nc half-closes at EOF, the sink answers and closes).
churn_nc() {{
  i=0; ok=0
  while [ $i -lt $1 ]; do
    [ "$(nc {GATEWAY} {LOCAL_SINK_PORT} < /dev/null)" = "0 {empty_sha}" ] && ok=$((ok + 1))
    i=$((i + 1))
  done
  echo $ok
}}
# The server closes first (HTTP/1.0).
churn_wget() {{
  i=0; ok=0
  while [ $i -lt $1 ]; do
    [ "$(wget -q -O - http://{GATEWAY}:{LOCAL_HTTP_PORT}/{SMALL_FILE})" = "{SMALL_CONTENT}" ] && ok=$((ok + 1))
    i=$((i + 1))
  done
  echo $ok
}}
# Refused: nothing listens.
churn_refused() {{
  i=0; n=0
  while [ $i -lt $1 ]; do
    nc {GATEWAY} {LOCAL_CLOSED_PORT} < /dev/null > /dev/null 2>&1 || n=$((n + 1))
    i=$((i + 1))
  done
  echo $n
}}
retrans() {{ awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ {{ print $13 }}' /proc/net/snmp; }}
r=$(retrans)
s=$(up)
churn_nc {CHURN_PER_LOOP} > /tmp/n1 &
churn_nc {CHURN_PER_LOOP} > /tmp/n2 &
churn_wget {CHURN_PER_LOOP} > /tmp/w1 &
churn_wget {CHURN_PER_LOOP} > /tmp/w2 &
churn_refused {CHURN_REFUSED} > /tmp/r &
wait
e=$(up)
say "churn.secs=$(secs $s $e)"
say "churn.retrans=$(($(retrans) - r))"
say "churn.nc_ok=$(($(cat /tmp/n1) + $(cat /tmp/n2)))"
say "churn.wget_ok=$(($(cat /tmp/w1) + $(cat /tmp/w2)))"
say "churn.refused=$(cat /tmp/r)"
say mark=end
sleep 300
"#
    )
}

/// Items 8 and 9 of the NAT list: 200 connections open at once to a remote server that answers
/// only once all are in; then thousands of short connections (guest closes first, server closes
/// first, refused), after which the backend's open fds return to what they were before (within
/// a few seconds) and its anonymous memory has not grown beyond a bound. Once QEMU is gone the
/// backend is back to its idle fd count.
///
/// Over either link the backend holds its idle fds before QEMU connects, one connection (the
/// vhost-user socket and its eventfds, or the stream socket) and its engine while the guest
/// runs, and a host socket per open flow; the fd and memory bounds are the same for both.
fn nat_many_connections_and_no_flow_leak(link: Link) {
    if !ready() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let lab = Lab::new();
    let mut backend = lab.backend(link);
    let pid = backend.pid();
    let idle_fds = netns::fd_count(pid).expect("backend fds");
    let idle_listing = fd_listing(pid);
    let name = format!("nat-connections-{link}");
    let opts = GuestOpts::new(&name, backend.net()).script(&connections_script());
    let mut guest = spawn_guest(&lab.host, &opts).expect("starting the guest");
    let mark = |what: &str| format!("{SAY}mark={what}");

    // Baseline: the guest is up (its link to the backend established), no flow yet.
    if let Err(e) = guest.wait_for_line(&mark("start"), Duration::from_secs(120)) {
        fail(&lab, &mut backend, &guest.console(), &e.to_string());
    }
    let base_fds = netns::fd_count(pid).expect("backend fds");
    let base_mem = netns::memory(pid).expect("backend memory");
    let base_listing = fd_listing(pid);

    // While the guest works: the peak fd count (the concurrent flows show here).
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut peak_fds = base_fds;
    loop {
        peak_fds = peak_fds.max(netns::fd_count(pid).unwrap_or(0));
        if guest.console().lines().any(|l| l == mark("end")) {
            break;
        }
        if Instant::now() > deadline || !backend.is_running() {
            fail(
                &lab,
                &mut backend,
                &guest.console(),
                "the guest did not finish its connections (no `mark=end`) in time, or the \
                 backend exited",
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The churn is over: flows close as their last segments go; allow a few seconds.
    let churn_done = Instant::now();
    let mut after_fds = netns::fd_count(pid).expect("backend fds");
    while after_fds > base_fds + FD_MARGIN && churn_done.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
        after_fds = netns::fd_count(pid).expect("backend fds");
    }
    let settle = churn_done.elapsed();
    let after_mem = netns::memory(pid).expect("backend memory");
    let after_listing = fd_listing(pid);

    // Stop the guest (it idles after mark=end); the backend must let go of the connection.
    let console = guest.console();
    drop(guest);
    let gone = Instant::now();
    let mut final_fds = netns::fd_count(pid).expect("backend fds");
    while final_fds > idle_fds && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        final_fds = netns::fd_count(pid).expect("backend fds");
    }
    let final_listing = fd_listing(pid);

    let mut c = Checks::of_console(&name, &console, SAY);
    c.expect_eq(
        "many.ok",
        &CONCURRENT.to_string(),
        "concurrent connections answered by the gather server",
    );
    c.expect_eq(
        "many.distinct",
        &CONCURRENT.to_string(),
        "distinct answers to the concurrent connections",
    );
    let many_secs = c.get("many.secs");
    figure(
        link,
        &format!(
            "{CONCURRENT} concurrent connections to the remote host in {many_secs} s; backend fds: \
         idle {idle_fds}, guest up {base_fds}, peak {peak_fds}"
        ),
    );
    c.check(peak_fds >= base_fds + CONCURRENT / 2, || {
        format!(
            "the backend never held even {} sockets at once (peak {peak_fds} fds, {base_fds} \
             before): were the {CONCURRENT} connections really concurrent?",
            CONCURRENT / 2
        )
    });
    c.expect_eq(
        "churn.nc_ok",
        &(2 * CHURN_PER_LOOP).to_string(),
        "short nc connections to the gateway (guest closes first) answered",
    );
    c.expect_eq(
        "churn.wget_ok",
        &(2 * CHURN_PER_LOOP).to_string(),
        "short HTTP fetches from the gateway (server closes first) answered",
    );
    c.expect_eq(
        "churn.refused",
        &CHURN_REFUSED.to_string(),
        "connections to a closed port on the gateway refused",
    );
    // Nothing is lost between the guest and the backend: a retransmission means a segment
    // went unanswered (such as a FIN the backend never acknowledged).
    let retrans = c.expect_at_most(
        "churn.retrans",
        CHURN_RETRANS_LIMIT,
        "TCP segments the guest retransmitted during the churn (the backend leaves segments \
         unanswered)",
    );
    let churn_secs = c.get("churn.secs");
    let total = 4 * CHURN_PER_LOOP + CHURN_REFUSED;
    figure(
        link,
        &format!(
            "{total} short connections in {churn_secs} s ({retrans} guest retransmissions); backend fds {after_fds} after {settle:.1?} \
         (baseline {base_fds}); anonymous memory {} -> {} KiB, RSS {} -> {} KiB; fds once QEMU \
         was gone {final_fds} (idle {idle_fds})",
            base_mem.anon_kib, after_mem.anon_kib, base_mem.rss_kib, after_mem.rss_kib
        ),
    );
    c.check(after_fds <= base_fds + FD_MARGIN, || {
        format!(
            "flow leak: the backend holds {after_fds} fds {settle:.1?} after the churn, {base_fds} \
             before it (margin {FD_MARGIN}); before:\n{base_listing}\n  after:\n{after_listing}"
        )
    });
    let growth = after_mem.anon_kib.saturating_sub(base_mem.anon_kib);
    c.check(growth <= ANON_GROWTH_LIMIT_KIB, || {
        format!(
            "the backend's anonymous memory grew by {growth} KiB over the churn (limit \
             {ANON_GROWTH_LIMIT_KIB} KiB): {base_mem:?} -> {after_mem:?}"
        )
    });
    let rss_growth = after_mem.rss_kib.saturating_sub(base_mem.rss_kib);
    c.check(rss_growth <= RSS_GROWTH_LIMIT_KIB, || {
        format!(
            "the backend's resident memory grew by {rss_growth} KiB over the churn (limit \
             {RSS_GROWTH_LIMIT_KIB} KiB): {base_mem:?} -> {after_mem:?}"
        )
    });
    c.check(final_fds <= idle_fds, || {
        format!(
            "the backend holds {final_fds} fds 5 s after QEMU went away, {idle_fds} before it \
             came; before:\n{idle_listing}\n  after:\n{final_listing}"
        )
    });
    c.check(backend.is_running(), || {
        "the backend exited (it must keep serving after QEMU goes)".to_owned()
    });
    let context = lab.context(&mut backend);
    c.finish(&context);
    figure(
        link,
        &format!("connections test took {:.1?}", started.elapsed()),
    );
}

both_links!(nat_many_connections_and_no_flow_leak);

/// Fails the test with the console's tail and the logs.
fn fail(lab: &Lab, backend: &mut Backend, console: &str, msg: &str) -> ! {
    panic!(
        "{msg}\nconsole (last 30 lines):\n{}\n{}",
        tail(console, 30),
        lab.context(backend)
    )
}

/// What `/proc/PID/fd` points at, summarised ("socket: 12", "anon_inode:[eventfd]: 3", ...).
fn fd_listing(pid: u32) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".to_owned());
            let kind = match target.split_once(":[") {
                Some((kind, _)) if kind != "anon_inode" => kind.to_owned(),
                _ => target,
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
        .iter()
        .map(|(k, n)| format!("  {k}: {n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn iperf_summaries_parse() {
    let udp =
        "[  5]   0.00-3.00   sec  7.15 MBytes  20.0 Mbits/sec  0.026 ms  0/6250 (0%)  receiver";
    assert_eq!(
        parse_iperf(udp),
        Some(IperfSummary {
            mbit_s: 20.0,
            lost_total: Some((0, 6250))
        })
    );
    let tcp = "[  5]   0.00-3.04   sec   360 MBytes   994 Mbits/sec                  receiver";
    assert_eq!(
        parse_iperf(tcp),
        Some(IperfSummary {
            mbit_s: 994.0,
            lost_total: None
        })
    );
    let g = "[  5]   0.00-3.00   sec  1.2 GBytes  1.50 Gbits/sec  receiver";
    assert_eq!(parse_iperf(g).map(|s| s.mbit_s), Some(1500.0));
    assert_eq!(parse_iperf("iperf3: error - unable to connect"), None);
}
