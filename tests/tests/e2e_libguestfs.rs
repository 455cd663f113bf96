//! End-to-end: libguestfs (Debian 13's, direct backend, network on, TCG) takes this program as
//! its `passt`, and its appliance sees what it sees under QEMU slirp.
//!
//! libguestfs gives QEMU `-netdev user,net=169.254.2.15/16` when no `passt` runs, else starts
//! `passt --one-off --socket DIR/passt.sock --pid DIR/passtN.pid --address 169.254.2.15
//! --netmask 16 --mac-addr 52:56:00:00:00:02 --gateway 169.254.2.2` and gives QEMU `-netdev
//! stream`. `scripts/guestfs-net.sh` boots the appliance in a Debian 13 root (built once by
//! `scripts/debian13.sh` with guestfish and a kernel added) three ways: QEMU slirp (Debian's
//! passt hidden), Debian's passt (for the record), and this program as `/usr/local/bin/passt`.
//! Under this program the appliance's address, netmask, routes (default route via the router),
//! DNS server and IPv6 routes (from router advertisements) must equal slirp's; the gateway's
//! MAC is the one libguestfs asked for; and once the appliance is gone no process, socket or
//! pid file of ours is left.
//!
//! Needs root (mount namespaces, debootstrap); a root that cannot be built fails the test unless
//! `VNU_E2E_ALLOW_SKIP=1`. The appliance is built on the first run and kept in the Debian 13
//! root's /var/tmp/guestfs-cache, so later runs only boot it. `VNU_GUESTFS_TIMEOUT` bounds each
//! boot (seconds, default 600).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vnu_tests::{TempDir, backend_bin, skip, tail, workspace_root};

const MODES: [&str; 3] = ["slirp", "debian-passt", "vnu-passt"];

/// What one boot of the appliance reported: the script's `vnu-guestfs KEY: VALUE` lines.
#[derive(Debug)]
struct View {
    mode: &'static str,
    lines: Vec<(String, String)>,
    stderr: PathBuf,
}

impl View {
    /// Every value of `key`, in order.
    fn all(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `key` (empty when the script printed none).
    fn one(&self, key: &str) -> &str {
        self.all(key).first().copied().unwrap_or("")
    }

    fn log_tail(&self) -> String {
        tail(
            &String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()),
            40,
        )
    }
}

fn script() -> PathBuf {
    workspace_root().join("scripts/guestfs-net.sh")
}

/// Runs `guestfs-net.sh ARG` with stdout and stderr in files under `dir`, in a process group of
/// its own that is killed if it outlives `timeout`; returns (exit success, stdout, stderr path).
fn run_script(dir: &Path, arg: &str, bin: &Path, timeout: Duration) -> (bool, String, PathBuf) {
    let out = dir.join(format!("{arg}.out"));
    let err = dir.join(format!("{arg}.err"));
    let mut child = Command::new(script())
        .arg(arg)
        .env("VNU_BIN", bin)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("running scripts/guestfs-net.sh");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("waiting for guestfs-net.sh") {
            Some(status) => break Some(status),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => break None,
        }
    };
    if status.is_none() {
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = child.wait();
    }
    let stdout = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
    (status.is_some_and(|s| s.success()), stdout, err)
}

fn parse(mode: &'static str, stdout: &str, stderr: PathBuf) -> View {
    let lines = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("vnu-guestfs "))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
    View {
        mode,
        lines,
        stderr,
    }
}

/// Processes whose command line names `needle`, polled until none is left or 10 s have passed.
fn processes_naming(needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(needle))
            .collect();
        if found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn libguestfs_appliance_sees_slirps_view_with_this_program_as_passt() {
    if !rustix::process::geteuid().is_root() {
        skip("needs root (debootstrap, mount namespaces for the Debian 13 root)");
        return;
    }
    let bin = match backend_bin() {
        Ok(bin) => bin,
        Err(e) => {
            skip(&e.to_string());
            return;
        }
    };
    let timeout = Duration::from_secs(
        std::env::var("VNU_GUESTFS_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let dir = TempDir::new("guestfs").expect("temp dir");

    let started = Instant::now();
    let (built, _, err) = run_script(dir.path(), "--build-only", &bin, timeout);
    if !built {
        let log = String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
        skip(&format!(
            "the Debian 13 root with libguestfs could not be built:\n{}",
            tail(&log, 30)
        ));
        return;
    }
    eprintln!("root ready in {:.1?}", started.elapsed());

    // The three boots at once: each is one TCG vCPU, and they share only the cached appliance.
    let started = Instant::now();
    let views: Vec<View> = std::thread::scope(|s| {
        let handles: Vec<_> = MODES
            .map(|mode| {
                let (dir, bin) = (dir.path(), bin.as_path());
                s.spawn(move || {
                    let (ok, stdout, err) = run_script(dir, mode, bin, timeout);
                    let view = parse(mode, &stdout, err);
                    assert!(
                        ok,
                        "guestfs-net.sh {mode} failed; it printed:\n{stdout}\nlog:\n{}",
                        view.log_tail()
                    );
                    view
                })
            })
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a boot panicked"))
            .collect()
    });
    eprintln!("three boots in {:.1?}", started.elapsed());
    for view in &views {
        eprintln!("--- appliance under {}:", view.mode);
        for (k, v) in &view.lines {
            eprintln!("  {k}: {v}");
        }
    }
    let [slirp, _debian, ours] = &views[..] else {
        unreachable!()
    };

    // libguestfs chose the network each mode stands for.
    assert!(
        slirp.one("netdev").starts_with("-netdev user,"),
        "slirp mode: {}",
        slirp.one("netdev")
    );
    assert!(
        ours.one("netdev").starts_with("-netdev stream,"),
        "ours: {}",
        ours.one("netdev")
    );
    let passt = ours.one("passt");
    let expected_tail = "--address 169.254.2.15 --netmask 16 --mac-addr 52:56:00:00:00:02 \
                         --gateway 169.254.2.2";
    assert!(
        passt.starts_with("passt --one-off --socket ") && passt.ends_with(expected_tail),
        "libguestfs ran: {passt:?}"
    );

    // slirp's view, then ours equal to it.
    assert!(
        slirp
            .one("inet")
            .starts_with("inet 169.254.2.15/16 brd 169.254.255.255 "),
        "{}\n{}",
        slirp.one("inet"),
        slirp.log_tail()
    );
    assert!(
        slirp
            .all("route")
            .iter()
            .any(|r| r.starts_with("default via 169.254.2.2 dev eth0 ")),
        "slirp routes: {:?}",
        slirp.all("route")
    );
    assert!(
        slirp
            .all("route6")
            .iter()
            .any(|r| r.starts_with("default via fe80::2 dev eth0 ")),
        "slirp IPv6 routes: {:?}",
        slirp.all("route6")
    );
    for key in ["inet", "route", "dns", "route6"] {
        assert_eq!(
            ours.all(key),
            slirp.all(key),
            "{key}: this program as passt vs QEMU slirp\n{}",
            ours.log_tail()
        );
    }
    // The gateway answers ARP with the MAC libguestfs gave (--mac-addr), which passt uses for
    // its own side too; slirp's is 52:55:a9:fe:02:02.
    assert_eq!(ours.one("gwmac"), "52:56:00:00:00:02");

    // Nothing of ours is left: libguestfs's socket directory holds neither passt's socket nor its
    // pid file once QEMU has gone and our process has exited, and no process names that
    // directory.
    let running = ours.one("running");
    assert!(
        running.contains("passt.sock"),
        "socket directory while running: {running:?}"
    );
    let after = ours.one("after");
    assert!(
        !after.contains("passt"),
        "left in libguestfs's socket directory (owner and mode {:?}) after the appliance stopped \
         and our passt (running as {:?}) exited: {after:?}",
        ours.one("sockdir"),
        ours.one("passtuser")
    );
    for view in &views {
        assert_eq!(view.one("leftover"), "none", "{}", view.mode);
        let sockdir = view
            .one("netdev")
            .split("addr.path=")
            .nth(1)
            .and_then(|p| p.rsplit_once('/'))
            .map(|(d, _)| d.to_owned());
        if let Some(sockdir) = sockdir {
            let left = processes_naming(&format!("{sockdir}/"));
            assert!(left.is_empty(), "{}: still running: {left:?}", view.mode);
        }
    }
}
