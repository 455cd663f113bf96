//! A QEMU process running the guest: started, watched (console lines), waited for and parsed,
//! killed on drop; with or without one of the slots.

use std::fmt;
use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::process::{command_in, kill_and_reap, kill_if_running, read_lossy, tail, wait_timeout};
use crate::slots::SlotGuard;
use crate::{Error, GuestOpts, GuestRun, Result, TempDir, guest_image, qemu_bin};

/// A QEMU running the guest; killed on drop. From [`spawn`]; [`RunningGuest::wait`] gives the
/// result.
#[derive(Debug)]
pub struct RunningGuest {
    child: Child,
    dir: TempDir,
    started: Instant,
    timeout: Duration,
    name: String,
    command: String,
}

/// Starts QEMU for `opts` and returns at once. Unlike [`boot`](crate::boot) this takes no slot:
/// mind the number of QEMUs you run at once.
pub fn spawn(opts: &GuestOpts) -> Result<RunningGuest> {
    spawn_in(None, opts)
}

/// [`spawn`], inside the network namespace named `ns` if given (`ip netns exec`, which execs
/// QEMU, so [`RunningGuest::pid`] is still QEMU's own).
pub(crate) fn spawn_in(ns: Option<&str>, opts: &GuestOpts) -> Result<RunningGuest> {
    let image = guest_image()?;
    let dir = TempDir::new(&format!("guest-{}", sanitize(&opts.name)))?;
    let args = opts.qemu_args(&image, dir.path())?;
    let qemu = qemu_bin();
    let (prefix, inside) = match ns {
        Some(ns) => (format!("ip netns exec {ns} "), format!(" in {ns}")),
        None => (String::new(), String::new()),
    };
    let command = format!("{prefix}{qemu} {}", args.join(" "));
    std::fs::write(dir.join("command"), &command).ok();
    let log = File::create(dir.join("qemu.log")).map_err(|e| Error::new(format!("{e}")))?;
    let log2 = log.try_clone().map_err(|e| Error::new(format!("{e}")))?;
    let child = command_in(ns, &qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| Error::new(format!("starting {qemu}{inside}: {e}")))?;
    Ok(RunningGuest {
        child,
        dir,
        started: Instant::now(),
        timeout: opts.timeout,
        name: opts.name.clone(),
        command,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect()
}

impl RunningGuest {
    /// Waits for the guest to power off (up to the timeout counted from [`spawn`]) and parses
    /// what it printed. An error when QEMU was killed for the timeout, or when the guest never
    /// printed its END marker; the error has the console's tail and QEMU's messages.
    pub fn wait(mut self) -> Result<GuestRun> {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        let status = wait_timeout(&mut self.child, left);
        let elapsed = self.started.elapsed();
        if status.is_none() {
            kill_and_reap(&mut self.child);
        }
        let console = self.console();
        let qemu_log = read_lossy(&self.dir.join("qemu.log"));
        let run = GuestRun::parse(&self.name, &console, &qemu_log, elapsed);
        let failure = match status {
            None => Some(format!("timed out after {:.0?}", self.timeout)),
            Some(s) if !run.completed => {
                Some(format!("QEMU exited ({s}) before the guest's END marker"))
            }
            Some(_) => None,
        };
        match failure {
            None => Ok(run),
            Some(why) => Err(Error::new(format!(
                "guest `{}`: {why}\ncommand: {}\nQEMU said:\n{}\nconsole (last 40 lines):\n{}",
                self.name,
                self.command,
                tail(&qemu_log, 20),
                tail(&console, 40)
            ))),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a console line is exactly `line` (e.g. `run: mark=start`, printed by the
    /// guest script). An error, with the console's tail, if QEMU exits first or after `timeout`.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let what = format!("guest `{}`", self.name);
        let console = self.dir.join("console.log");
        let child = &mut self.child;
        wait_for_console_line(
            &what,
            || read_lossy(&console).replace('\r', ""),
            || matches!(child.try_wait(), Ok(Some(_))),
            "before QEMU exited",
            line,
            timeout,
        )
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        read_lossy(&self.dir.join("console.log")).replace('\r', "")
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// A [`RunningGuest`] holding one of the `VNU_E2E_JOBS` slots while it runs (as
/// [`boot`](crate::boot) does), for tests that act on the host while the guest works: from
/// [`spawn_slotted`], or [`netns::spawn_guest`](crate::netns::spawn_guest) inside a namespace.
/// Killed on drop.
pub struct SlottedGuest {
    // Declared first so that it drops first: QEMU is killed before the slot is given back.
    pub(crate) guest: RunningGuest,
    pub(crate) _slot: SlotGuard,
}

impl fmt::Debug for SlottedGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlottedGuest")
            .field("pid", &self.guest.pid())
            .field("name", &self.guest.name)
            .field("dir", &self.guest.dir)
            .finish_non_exhaustive()
    }
}

impl SlottedGuest {
    pub fn pid(&self) -> u32 {
        self.guest.pid()
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        self.guest.console()
    }

    /// See [`RunningGuest::wait_for_line`].
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        self.guest.wait_for_line(line, timeout)
    }

    /// Waits for the guest to power off and parses what it printed, as
    /// [`RunningGuest::wait`] does.
    pub fn wait(self) -> Result<GuestRun> {
        self.guest.wait()
    }
}

/// Waits for a free slot, then [`spawn`]s the guest of `opts`.
pub fn spawn_slotted(opts: &GuestOpts) -> Result<SlottedGuest> {
    let slot = SlotGuard::acquire();
    Ok(SlottedGuest {
        guest: spawn(opts)?,
        _slot: slot,
    })
}

/// Waits until a line of `console()` is exactly `line`: an error naming `what`, with the
/// console's tail, once `stopped()` (the console is read once more after it, for the last
/// lines written) or after `timeout`.
pub(crate) fn wait_for_console_line(
    what: &str,
    console: impl Fn() -> String,
    mut stopped: impl FnMut() -> bool,
    stopped_reason: &str,
    line: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if console().lines().any(|l| l == line) {
            return Ok(());
        }
        let has_stopped = stopped();
        if has_stopped && console().lines().any(|l| l == line) {
            return Ok(());
        }
        if has_stopped || Instant::now() > deadline {
            return Err(Error::new(format!(
                "{what}: no console line `{line}` {}\nconsole (last 30 lines):\n{}",
                if has_stopped {
                    stopped_reason.to_owned()
                } else {
                    format!("within {timeout:?}")
                },
                tail(&console(), 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
