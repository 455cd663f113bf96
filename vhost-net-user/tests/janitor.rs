//! Started as root in a directory only root may write (libvirt's, libguestfs's), the backend
//! drops to nobody, who cannot remove its socket and pid file from there: the janitor it
//! forks before the drop removes them once the backend has exited, by SIGTERM or SIGKILL,
//! then exits itself. Unprivileged or with `--sandbox off` there is no janitor.
//!
//! Needs root (as the tests run in CI); each test says it is skipped otherwise.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal};

mod common;
use common::{get_features, pid_in, proc_stat, wait_until};

/// Whether the test may run; says why not otherwise.
fn root(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!(
            "{test}: skipped: needs root (the janitor exists only for a backend started as root)"
        );
    }
    root
}

/// A directory of its own, owned by root, mode 0755 (nobody may not write it); on drop the
/// backend (if still there) is killed and the directory removed.
struct RootDir {
    dir: PathBuf,
    daemon: Option<i32>,
    child: Option<Child>,
}

impl RootDir {
    fn new(name: &str) -> RootDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vnu-janitor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        RootDir {
            dir,
            daemon: None,
            child: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The program in the normal mode, `--socket-path D/vu.sock --pid-file D/vu.pid ARGS`,
    /// once it answers on its socket (so it is serving, confined); returns its pid.
    fn start_normal(&mut self, args: &[&str], configure: impl FnOnce(&mut Command)) -> i32 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vhost-net-user"));
        cmd.arg("--socket-path")
            .arg(self.path("vu.sock"))
            .arg("--pid-file")
            .arg(self.path("vu.pid"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env_remove("RUST_LOG");
        configure(&mut cmd);
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        self.child = Some(child);
        self.daemon = Some(pid);
        let socket = self.path("vu.sock");
        let mut sock = None;
        wait_until("the backend's socket accepts a connection", || {
            sock = UnixStream::connect(&socket).ok();
            sock.is_some()
        });
        get_features(sock.as_mut().unwrap());
        pid
    }

    /// The program through a `passt` link with libvirt's command line; returns the pid in its
    /// pid file once the process that started it has exited (the daemon is ready then).
    fn start_passt(&mut self) -> i32 {
        let link = self.path("passt");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vhost-net-user"), &link).unwrap();
        let out = Command::new(&link)
            .args(["--vhost-user", "--one-off", "--socket"])
            .arg(self.path("s.sock"))
            .arg("--pid")
            .arg(self.path("p.pid"))
            .args(["--address", "169.254.0.0", "--netmask", "16"])
            .current_dir("/")
            .stdin(Stdio::null())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = pid_in(&self.path("p.pid"));
        self.daemon = Some(pid);
        pid
    }
}

impl Drop for RootDir {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon.and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Live processes whose parent is `pid` (here, the janitor: the plans start no launcher).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| matches!(proc_stat(p), Some((state, ppid)) if ppid == pid && state != 'Z'))
        .collect()
}

fn signal(pid: i32, sig: Signal) {
    rustix::process::kill_process(Pid::from_raw(pid).unwrap(), sig).unwrap();
}

/// After `sig` to the daemon, `files` disappear and the janitor (its one child) exits.
fn check_removed_after(dir: &RootDir, daemon: i32, sig: Signal, files: &[&str]) {
    let kids = children(daemon);
    let names: Vec<String> = kids
        .iter()
        .map(|k| {
            std::fs::read_to_string(format!("/proc/{k}/comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    for file in files {
        assert!(dir.path(file).exists(), "{file} missing before the signal");
    }
    // Beyond its standard streams, the janitor holds its pipe and nothing else, once it has
    // closed what it inherited (a janitor forked a moment ago may not have yet).
    for kid in &kids {
        let held = || -> Vec<String> {
            std::fs::read_dir(format!("/proc/{kid}/fd"))
                .unwrap()
                .filter_map(|e| {
                    let e = e.ok()?;
                    let n: i32 = e.file_name().to_str()?.parse().ok()?;
                    (n > 2).then(|| std::fs::read_link(e.path()).ok())?
                })
                .map(|target| target.display().to_string())
                .collect()
        };
        let only_its_pipe = |held: &[String]| held.len() == 1 && held[0].starts_with("pipe:");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !only_its_pipe(&held()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let held = held();
        assert!(only_its_pipe(&held), "the janitor {kid} holds {held:?}");
    }
    signal(daemon, sig);
    for file in files {
        let path = dir.path(file);
        wait_until(&format!("{} is removed", path.display()), || {
            std::fs::symlink_metadata(&path).is_err()
        });
    }
    assert_eq!(
        names,
        ["vnu-janitor"],
        "children of the backend {daemon}: {kids:?}"
    );
    let janitor = kids[0];
    wait_until(&format!("the janitor {janitor} exits"), || {
        proc_stat(janitor).is_none_or(|(state, _)| state == 'Z')
    });
}

#[test]
fn sigterm_normal_mode_removes_socket_and_pid_file_from_a_root_directory() {
    if !root("sigterm_normal_mode") {
        return;
    }
    let mut dir = RootDir::new("term");
    let daemon = dir.start_normal(&[], |_| {});
    check_removed_after(&dir, daemon, Signal::TERM, &["vu.sock", "vu.pid"]);
}

#[test]
fn sigkill_normal_mode_removes_socket_and_pid_file_from_a_root_directory() {
    if !root("sigkill_normal_mode") {
        return;
    }
    let mut dir = RootDir::new("kill");
    let daemon = dir.start_normal(&[], |_| {});
    check_removed_after(&dir, daemon, Signal::KILL, &["vu.sock", "vu.pid"]);
}

#[test]
fn sigterm_passt_mode_removes_socket_and_pid_file_from_a_root_directory() {
    if !root("sigterm_passt_mode") {
        return;
    }
    let mut dir = RootDir::new("passt-term");
    let daemon = dir.start_passt();
    check_removed_after(&dir, daemon, Signal::TERM, &["s.sock", "p.pid"]);
}

#[test]
fn sigkill_passt_mode_removes_socket_and_pid_file_from_a_root_directory() {
    if !root("sigkill_passt_mode") {
        return;
    }
    let mut dir = RootDir::new("passt-kill");
    let daemon = dir.start_passt();
    check_removed_after(&dir, daemon, Signal::KILL, &["s.sock", "p.pid"]);
}

#[test]
fn no_janitor_with_sandbox_off() {
    if !root("no_janitor_with_sandbox_off") {
        return;
    }
    let mut dir = RootDir::new("off");
    // Answering GET_FEATURES comes after Sandbox::enter, where the janitor would be forked.
    let daemon = dir.start_normal(&["--sandbox", "off"], |_| {});
    assert_eq!(children(daemon), Vec::<i32>::new());
    // Still root: it removes its files itself.
    signal(daemon, Signal::TERM);
    wait_until("the socket is removed", || !dir.path("vu.sock").exists());
}

#[test]
fn no_janitor_when_started_unprivileged() {
    if !root("no_janitor_when_started_unprivileged") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut dir = RootDir::new("user");
    let (uid, gid) = nobody();
    std::os::unix::fs::chown(&dir.dir, Some(uid), Some(gid)).unwrap();
    let daemon = dir.start_normal(&[], |cmd| {
        cmd.uid(uid).gid(gid);
    });
    assert_eq!(children(daemon), Vec::<i32>::new());
    signal(daemon, Signal::TERM);
    wait_until("the socket is removed", || !dir.path("vu.sock").exists());
}

/// nobody's user and group IDs, from /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("no nobody in /etc/passwd");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}
