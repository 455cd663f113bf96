//! The program run through a symbolic link named `passt`, with the command lines libvirt,
//! libguestfs and QEMU's `-netdev passt` give it: it goes to the background as passt does,
//! its pid file names the process that serves, its socket (or the socket pair it was handed)
//! answers, and it leaves nothing behind.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{free_port, get_features, pid_in, proc_stat, wait_until};

/// A directory of its own holding a `passt` link to the program, removed on drop. Writable
/// by everyone: started as root (as the tests run), the backend drops to nobody, and removes
/// its socket and pid file from here at exit.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vnu-passt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vhost-net-user"), dir.join("passt"))
            .unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Runs `passt ARGS` as libvirt does (working directory `/`) and waits for the process it
    /// started (the parent, which waits for the daemon to be ready) to exit.
    fn passt(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.path("passt"));
        cmd.args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.path("passt.pid"))
            && let Ok(pid) = text.trim().parse::<i32>()
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

fn terminate(pid: i32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
}

/// Over the stream link: an ARP request from the guest (`guest` asking for `gateway`); returns
/// the MAC the reply gives the gateway.
fn arp_gateway_mac(sock: &mut UnixStream, guest: [u8; 4], gateway: [u8; 4]) -> [u8; 6] {
    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&guest);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&gateway);
    let mut msg = (arp.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&arp);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(&msg).unwrap();
    // Router advertisements may come first: the ARP reply is the one with its EtherType.
    loop {
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        sock.read_exact(&mut frame).unwrap();
        if frame.get(12..14) == Some(&[0x08, 0x06]) && frame.get(20..22) == Some(&[0, 2]) {
            assert_eq!(&frame[28..32], &gateway, "the reply is for the gateway");
            return frame[22..28].try_into().unwrap();
        }
    }
}

#[test]
fn libvirt_vhostuser_command_line_goes_to_the_background_and_cleans_up() {
    let scratch = Scratch::new("libvirt");
    let socket = scratch.path("3-DOM-net0.socket");
    let pid_file = scratch.path("passt.pid");
    let log_file = scratch.path("passt.log");
    let forward = format!("{}:22", free_port("[::]"));
    let out = scratch.passt(&[
        "--log-file",
        log_file.to_str().unwrap(),
        "--vhost-user",
        "--one-off",
        "--socket",
        socket.to_str().unwrap(),
        "--pid",
        pid_file.to_str().unwrap(),
        "--address",
        "169.254.0.0",
        "--netmask",
        "16",
        "--tcp-ports",
        &forward,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // By the time the parent exits, the daemon (another process) is ready.
    let pid = pid_in(&pid_file);
    assert!(running(pid), "pid {pid} from the pid file is not running");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "a session of its own: {stat}");
    let mut sock = UnixStream::connect(&socket).unwrap();
    assert_ne!(get_features(&mut sock) & (1 << 32), 0, "VIRTIO_F_VERSION_1");
    // Confined, the daemon still logs to the file it opened.
    wait_until("the connection is logged", || {
        std::fs::read_to_string(&log_file).is_ok_and(|t| t.contains("info: frontend connected"))
    });
    // libvirt stops it by pid.
    terminate(pid);
    wait_until("the daemon exits", || !running(pid));
    wait_until("socket and pid file are removed", || {
        !socket.exists() && !pid_file.exists()
    });
}

#[test]
fn libguestfs_command_line_serves_the_stream_link_once() {
    let scratch = Scratch::new("libguestfs");
    let socket = scratch.path("passt.sock");
    let pid_file = scratch.path("passt.pid");
    assert!(matches!(
        scratch.passt(&["--help"]).status.code(),
        Some(0 | 1)
    ));
    let out = scratch.passt(&[
        "--one-off",
        "--socket",
        socket.to_str().unwrap(),
        "--pid",
        pid_file.to_str().unwrap(),
        "--address",
        "169.254.2.15",
        "--netmask",
        "16",
        "--mac-addr",
        "52:56:00:00:00:02",
        "--gateway",
        "169.254.2.2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    let mut sock = UnixStream::connect(&socket).unwrap();
    assert_eq!(
        arp_gateway_mac(&mut sock, [169, 254, 2, 15], [169, 254, 2, 2]),
        [0x52, 0x56, 0, 0, 0, 2]
    );
    // --one-off: the frontend gone, so is the backend, and what it made.
    drop(sock);
    wait_until("the daemon exits", || !running(pid));
    wait_until("socket and pid file are removed", || {
        !socket.exists() && !pid_file.exists()
    });
}

/// QEMU's `-netdev passt`: one end of a socket pair as `--fd`, inherited (not close-on-exec).
fn spawn_with_fd(scratch: &Scratch, args: &[&str]) -> (UnixStream, Output) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).unwrap();
    let fd = theirs.as_raw_fd().to_string();
    let mut argv = args.to_vec();
    argv.extend(["--fd", &fd]);
    let out = scratch.passt(&argv);
    drop(theirs);
    (ours, out)
}

#[test]
fn qemu_netdev_passt_fd_is_served_in_the_stream_framing() {
    let scratch = Scratch::new("fd-stream");
    let pid_file = scratch.path("passt.pid");
    // QEMU creates the pid file (empty) before it starts passt.
    std::fs::write(&pid_file, "").unwrap();
    let (mut sock, out) =
        spawn_with_fd(&scratch, &["--quiet", "--pid", pid_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    assert!(running(pid));
    assert_eq!(
        arp_gateway_mac(&mut sock, [10, 0, 2, 15], [10, 0, 2, 2]),
        [0x52, 0x55, 10, 0, 2, 2]
    );
    drop(sock);
    wait_until("the daemon exits with its socket closed", || !running(pid));
    wait_until("the pid file is removed", || !pid_file.exists());
}

#[test]
fn qemu_netdev_passt_fd_is_served_in_vhost_user() {
    let scratch = Scratch::new("fd-vu");
    let pid_file = scratch.path("passt.pid");
    let (mut sock, out) = spawn_with_fd(
        &scratch,
        &[
            "--quiet",
            "--vhost-user",
            "--pid",
            pid_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    assert_ne!(get_features(&mut sock) & (1 << 32), 0, "VIRTIO_F_VERSION_1");
    drop(sock);
    wait_until("the daemon exits with its socket closed", || !running(pid));
    wait_until("the pid file is removed", || !pid_file.exists());
}

#[test]
fn a_bad_command_line_exits_1_with_one_line() {
    let scratch = Scratch::new("bad");
    let socket = scratch.path("s.sock");
    let pid_file = scratch.path("passt.pid");
    for (args, want) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["-T", "22"], "-T is for pasta mode only"),
        (
            vec!["--fqdn", "vm.example"],
            "--fqdn vm.example: not supported",
        ),
        (
            vec![
                "--socket",
                socket.to_str().unwrap(),
                "--address",
                "300.1.1.1",
            ],
            "--address 300.1.1.1",
        ),
        (
            vec![
                "--socket",
                socket.to_str().unwrap(),
                "--pid",
                pid_file.to_str().unwrap(),
                "--netmask",
                "33",
            ],
            "--netmask 33",
        ),
        (vec!["--fd", "9"], "--fd 9"),
        // A path bind() cannot take, and a pid file in a directory that does not exist.
        (
            vec!["--socket", "/nonexistent-vnu/s.sock"],
            "--socket /nonexistent-vnu/s.sock: ",
        ),
        (
            vec![
                "--socket",
                socket.to_str().unwrap(),
                "--pid",
                "/nonexistent-vnu/p.pid",
            ],
            "--pid /nonexistent-vnu/p.pid: ",
        ),
    ] {
        let out = scratch.passt(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("passt: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(!socket.exists() && !pid_file.exists(), "{args:?}");
    }
}

#[test]
fn help_and_version_exit_0() {
    let scratch = Scratch::new("help");
    let out = scratch.passt(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--vhost-user"));
    let out = scratch.passt(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("passt "));
    let out = scratch.passt(&["--print-capabilities"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\": \"net\""));
}

/// In the background without `--log-file`, the daemon logs to syslog: RFC 3164 datagrams on
/// /dev/log, connected before confinement, still sent once confined. Run in a mount namespace
/// of its own (`unshare`, as root) whose /dev/log is a socket of this test's.
#[test]
fn background_logs_reach_syslog_once_confined() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for a mount namespace with its own /dev/log");
        return;
    }
    let scratch = Scratch::new("syslog");
    let log = scratch.path("log");
    let syslogd = std::os::unix::net::UnixDatagram::bind(&log).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    syslogd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let socket = scratch.path("passt.sock");
    let pid_file = scratch.path("passt.pid");
    let script = "mount -t tmpfs -o mode=755 none /dev && mknod -m 666 /dev/null c 1 3 \
         && touch /dev/log && mount --bind \"$1\" /dev/log && shift && exec \"$@\"";
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&log)
        .arg(scratch.path("passt"))
        .args(["--one-off", "--socket"])
        .arg(&socket)
        .arg("--pid")
        .arg(&pid_file)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    // A record made once confined: the frontend's arrival.
    let sock = UnixStream::connect(&socket).unwrap();
    let mut buf = [0u8; 2048];
    let tag = format!(" passt[{pid}]: info: stream frontend connected");
    loop {
        let n = syslogd
            .recv(&mut buf)
            .expect("the frontend's arrival is logged to syslog");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.starts_with('<'), "{msg}");
        if msg.ends_with(&tag) {
            assert!(
                msg.starts_with("<30>"),
                "facility daemon, severity info: {msg}"
            );
            break;
        }
    }
    drop(sock);
    wait_until("the daemon exits", || !running(pid));
}

/// `--log-size`: the confined daemon keeps its log file under the limit, the oldest records
/// making room (each connection logs a summary of about 1 KiB, so 100 connections log more
/// than twice the limit).
#[test]
fn the_confined_daemon_keeps_its_log_file_under_log_size() {
    let scratch = Scratch::new("logsize");
    let socket = scratch.path("passt.sock");
    let pid_file = scratch.path("passt.pid");
    let log_file = scratch.path("passt.log");
    let out = scratch.passt(&[
        "--socket",
        socket.to_str().unwrap(),
        "--pid",
        pid_file.to_str().unwrap(),
        "--log-file",
        log_file.to_str().unwrap(),
        "--log-size",
        "40960",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    for _ in 0..100 {
        drop(UnixStream::connect(&socket).unwrap());
    }
    // The last connection served: the daemon is back in accept, one more is answered.
    let mut last = UnixStream::connect(&socket).unwrap();
    assert_eq!(
        arp_gateway_mac(&mut last, [10, 0, 2, 15], [10, 0, 2, 2]),
        [0x52, 0x55, 10, 0, 2, 2]
    );
    drop(last);
    assert!(running(pid), "the daemon died while logging");
    terminate(pid);
    wait_until("the exit is logged", || {
        std::fs::read_to_string(&log_file).is_ok_and(|t| t.contains("info: signal 15: exiting"))
    });
    let text = std::fs::read_to_string(&log_file).unwrap();
    assert!(text.len() <= 40960, "{} bytes", text.len());
    assert!(
        text.lines().all(|l| l
            .split_once(": ")
            .is_some_and(|(t, _)| t.parse::<f64>().is_ok())),
        "whole records only:\n{text}"
    );
    assert!(!text.contains("serving on"), "the oldest went:\n{text}");
}

/// The internet checksum of `bytes` (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `--dns-host`: the guest's DNS queries to the DNS address go to that host nameserver, not to
/// resolv.conf's. A nameserver of the test's own on 127.0.0.2:53 (binding port 53 needs root).
#[test]
fn dns_host_is_where_the_guests_queries_go() {
    let Ok(nameserver) = std::net::UdpSocket::bind("127.0.0.2:53") else {
        eprintln!("skipped: 127.0.0.2:53 cannot be bound here (needs root, and the port free)");
        return;
    };
    nameserver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let scratch = Scratch::new("dns-host");
    let socket = scratch.path("passt.sock");
    let pid_file = scratch.path("passt.pid");
    let out = scratch.passt(&[
        "--one-off",
        "--socket",
        socket.to_str().unwrap(),
        "--pid",
        pid_file.to_str().unwrap(),
        "--dns-host",
        "127.0.0.2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let pid = pid_in(&pid_file);
    // A query for a.example. (A, IN) from the guest, 10.0.2.15:40000 to 10.0.2.3:53.
    let mut dns = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&53u16.to_be_bytes());
    udp.extend_from_slice(&(8 + dns.len() as u16).to_be_bytes());
    let mut pseudo = vec![10, 0, 2, 15, 10, 0, 2, 3, 0, 17];
    pseudo.extend_from_slice(&(8 + dns.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    pseudo.extend_from_slice(&[0, 0]);
    pseudo.extend_from_slice(&dns);
    udp.extend_from_slice(&checksum(&pseudo).to_be_bytes());
    udp.extend_from_slice(&dns);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + udp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 2, 15, 10, 0, 2, 3]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![
        0x52, 0x55, 10, 0, 2, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0,
    ];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    let mut msg = (frame.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&frame);
    let mut sock = UnixStream::connect(&socket).unwrap();
    sock.write_all(&msg).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = nameserver
        .recv_from(&mut buf)
        .expect("the query reaches --dns-host");
    assert_eq!(&buf[12..n], &dns[12..], "the question, relayed");
    drop(sock);
    wait_until("the daemon exits", || !running(pid));
}
