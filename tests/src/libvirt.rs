//! Real libvirt (11.3, Debian 13) booting the test guest: the libvirt end-to-end tests
//! (`tests/e2e_libvirt.rs`) and `scripts/libvirt-compare.sh`.
//!
//! # Theory of operation
//!
//! [`Libvirt::start`] runs `unshare --pid --fork --kill-child scripts/debian13.sh /bin/bash
//! DIR/libvirt-root.sh DIR [PASST]`: one long-lived process per libvirtd, in a PID namespace and
//! a mount namespace of its own, inside the Debian 13 root (built on first use). DIR is a fresh
//! directory under the temporary directory (shared with the root at the same path, and
//! traversable by libvirt's QEMU and passt, which run as `libvirt-qemu`, uid 64055): it holds
//! the launcher script, copies of the guest kernel and initramfs, the domains' XML and serial
//! consoles, libvirtd's log (every command it runs, passt's included) and, when libvirt is to
//! run this program as its passt, a copy of the backend binary: `scripts/libvirt-root.sh` links
//! `/usr/local/bin/passt` to it on a tmpfs that only its namespace sees (libvirtd looks passt up
//! through PATH, /usr/local/bin first), so the root on disk is never changed. A copy rather than
//! the build tree's binary because a parent of the build tree (a CI clone in a home directory)
//! may not be traversable by uid 64055.
//!
//! The test talks to that libvirtd with `virsh` run through `nsenter` into its namespaces, and
//! looks at its private `/run` through `/proc/PID/root`. The launcher's stdin is a pipe from the
//! test process: when the test process exits, however it ends (a failed assertion, a signal),
//! the pipe closes, the launcher exits, and the kernel kills everything left in its PID
//! namespace (libvirtd, virtlogd, QEMU, every passt), so nothing outlives the test binary.
//!
//! A [`Domain`] is the seed's domain (`<domain type='qemu'>`, direct kernel boot of the test
//! guest with its script on the kernel command line, MAC 52:54:00:41:2c:49, memfd shared
//! memory, `<acpi/>` so the guest powers off) with one interface: QEMU slirp (`type='user'`),
//! or libvirt's passt backend with `type='user'` (QEMU `-netdev stream`) or `type='vhostuser'`,
//! optionally with `<ip>` and a `<portForward>` on 127.0.0.1 only. [`Libvirt::create`] starts
//! it (`virsh create`: transient, gone once it stops) and gives a [`RunningDomain`] holding one
//! of the harness's QEMU slots; [`RunningDomain::wait`] waits for the guest to power off and
//! parses its console into a [`GuestRun`] like any other boot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::env::env_nonempty;
use crate::image::kernel_cmdline;
use crate::process::{kill_and_reap, read_lossy, tail, wait_timeout};
use crate::slots::SlotGuard;
use crate::{Error, GUEST_MAC, GuestRun, Result, TempDir, backend_bin, base64, guest_image};
use crate::{find_program, workspace_root};

/// Where libvirt 11.3 keeps the sockets and pid files of the passt it starts (inside the
/// launcher's namespace): `N-DOMAIN-net0.socket`, `N-DOMAIN-net0-passt.pid`.
pub const PASST_RUN_DIR: &str = "/run/libvirt/qemu/passt";

/// The longest domain name whose passt files carry it whole: libvirt names them after the
/// domain's "short name", its first 20 characters.
pub const MAX_NAME: usize = 20;

/// Which passt libvirtd runs for `<backend type='passt'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passt {
    /// Debian 13's own (/usr/bin/passt, 2025-05): what users get today.
    Debian,
    /// This program, as /usr/local/bin/passt.
    Ours,
}

/// The domain's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface {
    /// `<interface type='user'>`: QEMU slirp.
    Slirp,
    /// `<interface type='user'>` + `<backend type='passt'/>`: QEMU `-netdev stream`.
    UserPasst,
    /// `<interface type='vhostuser'>` + `<backend type='passt'/>`: the vhost-user ring.
    VhostUserPasst,
}

impl Iface {
    /// A short name for domain names and tables.
    pub fn label(self) -> &'static str {
        match self {
            Iface::Slirp => "slirp",
            Iface::UserPasst => "user",
            Iface::VhostUserPasst => "vhostuser",
        }
    }
}

/// One domain to boot.
#[derive(Debug, Clone)]
pub struct Domain {
    /// The libvirt domain name: unique among the domains running on this machine, at most
    /// [`MAX_NAME`] characters.
    pub name: String,
    pub iface: Iface,
    /// `<ip family='ipv4' address=A prefix=P/>`.
    pub ip: Option<(String, u8)>,
    /// `<portForward proto='tcp' address='127.0.0.1'><range start=HOST to=GUEST/>`.
    pub forward: Option<(u16, u16)>,
    /// Shell script the guest runs after its report (as [`GuestOpts::script`](crate::GuestOpts)).
    pub script: Option<String>,
    /// `<driver queues=N/>` on the interface, and as many vCPUs (one otherwise).
    pub queues: Option<u16>,
    pub timeout: Duration,
}

impl Domain {
    pub fn new(name: &str, iface: Iface) -> Domain {
        let timeout = env_nonempty("VNU_BOOT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(180);
        Domain {
            name: name.to_owned(),
            iface,
            ip: None,
            forward: None,
            script: None,
            queues: None,
            timeout: Duration::from_secs(timeout),
        }
    }

    pub fn ip(mut self, address: &str, prefix: u8) -> Self {
        self.ip = Some((address.to_owned(), prefix));
        self
    }

    pub fn forward(mut self, host: u16, guest: u16) -> Self {
        self.forward = Some((host, guest));
        self
    }

    pub fn script(mut self, script: &str) -> Self {
        self.script = Some(script.to_owned());
        self
    }

    /// `queues` queue pairs (libvirt's multiqueue) and as many vCPUs.
    pub fn queues(mut self, queues: u16) -> Self {
        self.queues = Some(queues);
        self
    }

    /// The domain XML; the kernel, initramfs and console are in `dir`.
    pub fn xml(&self, dir: &Path) -> String {
        // no_timer_check: on a loaded machine, TCG can be too slow for the kernel's check that
        // the IO-APIC timer ticks ("IO-APIC + timer doesn't work!", a panic at boot, seen here
        // with four QEMUs on two cores).
        let mut cmdline = kernel_cmdline(0) + " no_timer_check";
        if let Some(script) = &self.script {
            cmdline.push_str(" vnu.run=");
            cmdline.push_str(&base64(script.as_bytes()));
        }
        let kind = match self.iface {
            Iface::Slirp | Iface::UserPasst => "user",
            Iface::VhostUserPasst => "vhostuser",
        };
        let mut iface = format!(
            "<interface type='{kind}'>\n      <mac address='{GUEST_MAC}'/>\n      \
             <model type='virtio'/>\n      <rom enabled='no'/>\n"
        );
        if self.iface != Iface::Slirp {
            iface.push_str("      <backend type='passt'/>\n");
        }
        if let Some((address, prefix)) = &self.ip {
            iface.push_str(&format!(
                "      <ip family='ipv4' address='{address}' prefix='{prefix}'/>\n"
            ));
        }
        if let Some(queues) = self.queues {
            iface.push_str(&format!("      <driver queues='{queues}'/>\n"));
        }
        if let Some((host, guest)) = self.forward {
            iface.push_str(&format!(
                "      <portForward proto='tcp' address='127.0.0.1'><range start='{host}' \
                 to='{guest}'/></portForward>\n"
            ));
        }
        iface.push_str("    </interface>");
        let d = dir.display();
        format!(
            "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>{vcpus}</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{d}/vmlinuz</kernel>
    <initrd>{d}/initrd.gz</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {iface}
    <serial type='file'><source path='{d}/{name}.console'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
            name = self.name,
            vcpus = self.queues.unwrap_or(1),
        )
    }
}

/// A libvirtd (and its virtlogd) in the Debian 13 root, in namespaces of its own; everything
/// in them is killed when this is dropped or when the test process exits.
#[derive(Debug)]
pub struct Libvirt {
    passt: Passt,
    /// The `unshare` process (its child, the launcher, is the namespace's first process).
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    /// The launcher's pid as this process sees it: the target of `nsenter`.
    pid: u32,
    dir: TempDir,
}

impl Libvirt {
    /// Starts libvirtd with `passt` as its passt; waits until it answers (90 s at most,
    /// building the root first if needed). An error, with the launcher's output, if it cannot.
    pub fn start(passt: Passt) -> Result<Libvirt> {
        for program in ["unshare", "nsenter"] {
            if find_program(program).is_none() {
                return Err(Error::new(format!("{program} not found (util-linux)")));
            }
        }
        if !rustix::process::geteuid().is_root() {
            return Err(Error::new(
                "libvirt tests need root (scripts/debian13.sh: mount namespaces, pivot_root)",
            ));
        }
        let label = match passt {
            Passt::Debian => "libvirt-debian",
            Passt::Ours => "libvirt-ours",
        };
        let dir = TempDir::new(label)?;
        traversable_by_others(dir.path())?;
        let io = |what: &str, e: std::io::Error| Error::new(format!("{what}: {e}"));
        let image = guest_image()?;
        std::fs::copy(&image.kernel, dir.join("vmlinuz")).map_err(|e| io("vmlinuz", e))?;
        std::fs::copy(&image.initrd, dir.join("initrd.gz")).map_err(|e| io("initrd", e))?;
        let scripts = workspace_root().join("scripts");
        let launcher = dir.join("libvirt-root.sh");
        std::fs::copy(scripts.join("libvirt-root.sh"), &launcher)
            .map_err(|e| io("libvirt-root.sh", e))?;
        let mut args = vec![
            scripts.join("debian13.sh").display().to_string(),
            "/bin/bash".into(),
            launcher.display().to_string(),
            dir.path().display().to_string(),
        ];
        if passt == Passt::Ours {
            let copy = dir.join("vhost-net-user");
            std::fs::copy(backend_bin()?, &copy).map_err(|e| io("the backend binary", e))?;
            args.push(copy.display().to_string());
        }
        let stderr =
            std::fs::File::create(dir.join("launcher.log")).map_err(|e| io("launcher.log", e))?;
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .args(&args)
            .env("VNU_DEBIAN13_SHARE", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io("starting unshare", e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let started = Instant::now();
        let ready = loop {
            match rx.recv_timeout(Duration::from_secs(300)) {
                Ok(line) if line == "ready" => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        let launcher_pid = children_of(child.id()).first().copied();
        let libvirt = Libvirt {
            passt,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            pid: launcher_pid.unwrap_or(0),
            dir,
        };
        match (ready, launcher_pid) {
            (true, Some(_)) => {
                eprintln!(
                    "vnu-tests: libvirtd ({label}) ready in {:.1?}",
                    started.elapsed()
                );
                Ok(libvirt)
            }
            _ => Err(Error::new(format!(
                "libvirtd in the Debian 13 root did not start (scripts/debian13.sh builds the \
                 root; it needs debootstrap and the network the first time):\n{}",
                tail(&read_lossy(&libvirt.dir.join("launcher.log")), 30)
            ))),
        }
    }

    pub fn passt(&self) -> Passt {
        self.passt
    }

    /// The shared directory (consoles, XML, libvirtd.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the launcher's namespace (its private /run included), seen from here.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid))
    }

    /// libvirtd's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("libvirtd.log"))
    }

    /// The passt command lines libvirtd ran so far (from its log), for the domain `name`.
    pub fn passt_commands(&self, name: &str) -> Vec<String> {
        let socket = format!("-{name}-net0.socket");
        self.log()
            .lines()
            .filter_map(|l| l.split_once("About to run passt ").map(|(_, c)| c))
            .filter(|c| c.contains(&socket))
            .map(|c| format!("passt {c}"))
            .collect()
    }

    /// Runs `virsh -c qemu:///system ARGS` inside the namespaces; its stdout, or an error with
    /// its stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let pid = self.pid.to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-m", "-p", "-r", "-w", "env", "-i"])
            .args(["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "virsh", "-q"])
            .args(["-c", "qemu:///system"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::new(format!("running nsenter ... virsh: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::new(format!(
                "virsh {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )))
        }
    }

    /// Starts `domain` (`virsh create`) once a QEMU slot is free.
    pub fn create(&self, domain: &Domain) -> Result<RunningDomain<'_>> {
        if domain.name.len() > MAX_NAME {
            return Err(Error::new(format!(
                "domain name `{}` is longer than {MAX_NAME} characters: libvirt names its passt \
                 socket and pid file after the first {MAX_NAME} only, and the test finds them by \
                 the whole name",
                domain.name
            )));
        }
        let slot = SlotGuard::acquire();
        let xml = self.dir.join(&format!("{}.xml", domain.name));
        std::fs::write(&xml, domain.xml(self.dir.path()))
            .map_err(|e| Error::new(format!("writing {}: {e}", xml.display())))?;
        let started = Instant::now();
        self.virsh(&["create", &xml.display().to_string()])
            .map_err(|e| Error::new(format!("{e}\nlibvirtd log:\n{}", tail(&self.log(), 20))))?;
        Ok(RunningDomain {
            libvirt: self,
            name: domain.name.clone(),
            started,
            timeout: domain.timeout,
            stopped: false,
            _slot: slot,
        })
    }

    /// Non-zombie processes, seen from here, whose command line names domain `name`'s passt
    /// socket and which are not its QEMU: the passt libvirt started for it (ours or Debian's),
    /// with whatever it forked. As "pid: command line".
    pub fn passt_processes(&self, name: &str) -> Vec<String> {
        let socket = format!("-{name}-net0.socket");
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let names_socket = args.iter().any(|a| a.contains(&socket));
            let is_qemu = args.first().is_some_and(|a| a.contains("qemu-system"));
            if !names_socket || is_qemu || not_running(pid) {
                continue;
            }
            found.push(format!("{pid}: {}", args.join(" ").trim_end()));
        }
        found
    }

    /// The files libvirt's passt directory holds for domain `name` (socket, pid file, ...).
    pub fn passt_files(&self, name: &str) -> Vec<String> {
        let infix = format!("-{name}-net0");
        std::fs::read_dir(self.inside(PASST_RUN_DIR))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|f| f.contains(&infix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends libvirtd and everything in its namespace: closes the launcher's stdin (it exits, and
    /// the kernel kills the rest of its PID namespace), then waits for `unshare` (killed after
    /// 10 s).
    pub fn stop(&self) {
        drop(self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take());
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
            kill_and_reap(&mut child);
        }
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An error unless every directory above `dir` lets other users through (libvirt's QEMU and
/// passt, uid 64055, open the guest's files and the backend's copy in `dir`).
fn traversable_by_others(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .map_err(|e| Error::new(format!("{}: {e}", ancestor.display())))?;
        if mode & 0o001 == 0 {
            return Err(Error::new(format!(
                "{} (mode {:o}) is not traversable by libvirt's QEMU (uid 64055): point TMPDIR \
                 elsewhere",
                ancestor.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// The children of process `pid` (`/proc/PID/task/PID/children`).
fn children_of(pid: u32) -> Vec<u32> {
    read_lossy(Path::new(&format!("/proc/{pid}/task/{pid}/children")))
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Whether process `pid` is gone or a zombie (it ended; only its exit status is left).
fn not_running(pid: u32) -> bool {
    let stat = read_lossy(Path::new(&format!("/proc/{pid}/stat")));
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// A started domain, holding a QEMU slot; destroyed on drop if still running.
#[derive(Debug)]
pub struct RunningDomain<'a> {
    libvirt: &'a Libvirt,
    pub name: String,
    started: Instant,
    timeout: Duration,
    stopped: bool,
    _slot: SlotGuard,
}

impl RunningDomain<'_> {
    /// The serial console so far.
    pub fn console(&self) -> String {
        read_lossy(&self.libvirt.dir.join(&format!("{}.console", self.name))).replace('\r', "")
    }

    /// QEMU's log (libvirt's /var/log/libvirt/qemu/NAME.log).
    pub fn qemu_log(&self) -> String {
        read_lossy(
            &self
                .libvirt
                .inside(&format!("/var/log/libvirt/qemu/{}.log", self.name)),
        )
    }

    /// Whether libvirt still has the domain (transient domains vanish when they stop).
    pub fn is_running(&self) -> bool {
        self.libvirt
            .virsh(&["domstate", &self.name])
            .is_ok_and(|s| s.trim() == "running" || s.trim() == "paused")
    }

    /// Waits until a console line is exactly `line`; an error with the console's tail if the
    /// domain stops first or after `timeout`.
    pub fn wait_for_line(&self, line: &str, timeout: Duration) -> Result<()> {
        crate::guest::wait_for_console_line(
            &format!("domain `{}`", self.name),
            || self.console(),
            || !self.is_running(),
            "before it stopped",
            line,
            timeout,
        )
    }

    /// Waits for the guest to power off (the domain to vanish), then parses its console. An
    /// error if it did not stop in time (it is destroyed then) or never printed its END marker.
    pub fn wait(mut self) -> Result<GuestRun> {
        let deadline = self.started + self.timeout;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let timed_out = self.is_running();
        if timed_out {
            let _ = self.libvirt.virsh(&["destroy", &self.name]);
        }
        self.stopped = true;
        let run = self.parse();
        let failure = if timed_out {
            Some(format!("timed out after {:.0?}", self.timeout))
        } else if !run.completed {
            Some("the domain stopped before the guest's END marker".to_owned())
        } else {
            None
        };
        eprintln!(
            "vnu-tests: domain `{}` ran in {:.1?}",
            self.name, run.elapsed
        );
        match failure {
            None => Ok(run),
            Some(why) => Err(Error::new(format!(
                "domain `{}`: {why}\nQEMU said:\n{}\nconsole (last 40 lines):\n{}\nlibvirtd \
                 log:\n{}",
                self.name,
                tail(&self.qemu_log(), 20),
                tail(&self.console(), 40),
                tail(&self.libvirt.log(), 20)
            ))),
        }
    }

    /// `virsh destroy` (the guest is cut off wherever it is), then what its console holds.
    pub fn destroy(mut self) -> Result<GuestRun> {
        self.libvirt.virsh(&["destroy", &self.name])?;
        self.stopped = true;
        Ok(self.parse())
    }

    fn parse(&self) -> GuestRun {
        GuestRun::parse(
            &self.name,
            &self.console(),
            &self.qemu_log(),
            self.started.elapsed(),
        )
    }
}

impl Drop for RunningDomain<'_> {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.libvirt.virsh(&["destroy", &self.name]);
        }
    }
}

/// Polls `what` until it returns an empty list (`deadline` at most); the last non-empty list
/// otherwise. For "nothing is left" checks, which must not pass by looking too early.
pub fn until_empty(deadline: Duration, mut what: impl FnMut() -> Vec<String>) -> Vec<String> {
    let end = Instant::now() + deadline;
    loop {
        let left = what();
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_carry_the_seeds_interface_and_the_guest_script() {
        let dir = Path::new("/tmp/d");
        let slirp = Domain::new("s", Iface::Slirp)
            .ip("169.254.0.0", 16)
            .xml(dir);
        assert!(slirp.contains("<interface type='user'>"), "{slirp}");
        assert!(!slirp.contains("<backend"), "{slirp}");
        assert!(
            slirp.contains("<ip family='ipv4' address='169.254.0.0' prefix='16'/>"),
            "{slirp}"
        );
        assert!(
            slirp.contains("<mac address='52:54:00:41:2c:49'/>"),
            "{slirp}"
        );
        assert!(slirp.contains("<acpi/>"), "{slirp}");
        assert!(
            slirp.contains("<source type='memfd'/><access mode='shared'/>"),
            "{slirp}"
        );
        assert!(slirp.contains("<kernel>/tmp/d/vmlinuz</kernel>"), "{slirp}");
        assert!(
            slirp.contains("<source path='/tmp/d/s.console'/>"),
            "{slirp}"
        );

        let vhost = Domain::new("v", Iface::VhostUserPasst)
            .forward(40000, 8080)
            .script("echo hi")
            .xml(dir);
        assert!(vhost.contains("<interface type='vhostuser'>"), "{vhost}");
        assert!(vhost.contains("<backend type='passt'/>"), "{vhost}");
        assert!(!vhost.contains("<ip "), "{vhost}");
        assert!(
            vhost.contains(
                "<portForward proto='tcp' address='127.0.0.1'><range start='40000' \
                 to='8080'/></portForward>"
            ),
            "{vhost}"
        );
        assert!(
            vhost.contains(&format!("vnu.run={}", base64(b"echo hi"))),
            "{vhost}"
        );
        let user = Domain::new("u", Iface::UserPasst).xml(dir);
        assert!(user.contains("<interface type='user'>"), "{user}");
        assert!(user.contains("<backend type='passt'/>"), "{user}");
    }

    #[test]
    fn zombies_and_vanished_processes_are_not_running() {
        assert!(!not_running(std::process::id()));
        assert!(
            not_running(u32::MAX),
            "a process that does not exist counts as gone"
        );
    }
}
