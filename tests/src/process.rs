//! Child processes: signals, bounded waits, and reading what they wrote.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Sends `signal` to process `pid`; a process already gone is no error to the caller.
pub(crate) fn send_signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Kills `child` and reaps it. Errors mean it is already gone: nothing is left to do.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// [`kill_and_reap`] if `child` still runs: what a guard does on drop.
pub(crate) fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        kill_and_reap(child);
    }
}

/// A command that runs `program` inside network namespace `ns` if given (`ip netns exec NS
/// PROGRAM`, stdin from /dev/null; `ip` execs the program, so the child's pid is the program's),
/// else here.
pub(crate) fn command_in(ns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns])
                .arg(program)
                .stdin(Stdio::null());
            cmd
        }
        None => Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_enter_a_namespace_only_when_given_one() {
        let inside = command_in(Some("vnu1h0"), "qemu-system-x86_64");
        assert_eq!(inside.get_program(), "ip");
        let args: Vec<_> = inside.get_args().collect();
        assert_eq!(args, ["netns", "exec", "vnu1h0", "qemu-system-x86_64"]);

        let here = command_in(None, "qemu-system-x86_64");
        assert_eq!(here.get_program(), "qemu-system-x86_64");
        assert_eq!(here.get_args().count(), 0);
    }
}
