//! Processes the benchmarks start besides QEMU: daemons serving a guest (passt, the backend's
//! stream link), and a private network namespace for passt.
//!
//! Every one is a guard: dropping a [`Daemon`] stops its process (SIGTERM, then SIGKILL after
//! 5 s), dropping a [`Netns`] deletes the namespace. A guard declared after the namespace it runs
//! in is dropped first, so nothing is left running in a deleted namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args...` to completion; an error with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sends `signal` (a name such as `TERM`) to `pid` through the shell's `kill`: this crate has no
/// unsafe code for libc::kill.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid} 2>/dev/null"))
        .stdin(Stdio::null())
        .status();
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// A long-running helper process with its stdout and stderr in a log file; stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (program first) with its output in `log`, then waits up to 10 s for
    /// `socket` to appear: the sign that it serves.
    pub fn start(
        name: &str,
        command: &[String],
        log: &Path,
        socket: &Path,
    ) -> Result<Daemon, String> {
        let (program, args) = command.split_first().ok_or("empty command")?;
        let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name} ({program}): {e}"))?;
        let mut daemon = Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_socket(socket) {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before serving: `{}`\n{}",
                    command.join(" "),
                    daemon.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not create {} within 10 s:\n{}",
                    socket.display(),
                    daemon.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// The process id (with `ip netns exec`, the program's own: it execs without forking).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Stops the process: SIGTERM, SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    eprintln!("{} ignored SIGTERM for 5 s; killing it", self.name);
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private network namespace whose only way out is a dead end: loopback up, and a default
/// route over a veth pair whose both ends stay inside (the gateway never answers ARP), so a
/// program that insists on a default route (passt does) starts, and nothing it sends leaves
/// the namespace. Deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vnuperf<pid><label>`. Needs root (`ip netns add`).
    pub fn with_dead_end_route(label: &str) -> Result<Netns, String> {
        let name = format!("vnuperf{}{label}", std::process::id());
        // One left by a killed run of this very pid is unlikely but harmless to remove.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        run("ip", &["-n", n, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n", n, "link", "add", "vnu0", "type", "veth", "peer", "name", "vnu1",
            ],
        )?;
        run("ip", &["-n", n, "link", "set", "vnu0", "up"])?;
        run("ip", &["-n", n, "link", "set", "vnu1", "up"])?;
        // TEST-NET-2 (RFC 5737): documentation addresses, routed nowhere.
        run(
            "ip",
            &["-n", n, "addr", "add", "198.51.100.2/24", "dev", "vnu0"],
        )?;
        run(
            "ip",
            &[
                "-n",
                n,
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
                "dev",
                "vnu0",
            ],
        )?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command prefix that runs a program inside: `ip netns exec NAME`.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
