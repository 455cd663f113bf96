//! Confinement: what the backend may still do once its sockets and files are open.
//!
//! # Theory of operation
//!
//! The guest is an attacker, and a bug in the code it drives should give it as little of the
//! host as possible. So, after `cli::setup` has bound the forwards and the socket and opened
//! the pcap and pid files, and before any thread starts, [`Sandbox::enter`]:
//!
//! 1. forks the guest forwards' launcher ([`netcore::launcher`]) if the plan has guest
//!    forwards or smb=: the backend itself never execs again;
//! 2. started as root, and about to become a user who is not, forks the janitor if anything
//!    is registered for removal at exit ([`crate::exit`]): a process that stays root, under a
//!    seccomp filter of its own, to remove those paths once the backend has exited;
//! 3. sets `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0 (a core would hold guest RAM);
//! 4. started as root, becomes the `--runas` user (default `nobody`) with no supplementary
//!    groups; started as anyone else, stays who it is;
//! 5. sets `PR_SET_NO_NEW_PRIVS`;
//! 6. restricts the filesystem with Landlock, where the kernel has it, to what the plan names
//!    (the TFTP root, read-only) and what the backend itself makes and removes at run time
//!    (its per-connection daemon sockets in the temporary directory, the files it removes at
//!    exit);
//! 7. installs a seccomp allow-list for the whole process (`allowed_syscalls`), whose
//!    default action kills the process. Threads started later (connections, vhost-user's
//!    workers, relays, the signal thread) inherit it. Threads may be made (`clone` with
//!    `CLONE_THREAD`) but not processes, and nothing may exec. The vring worker, the thread
//!    that handles what the guest sends, adds a narrower filter of its own on its first event
//!    ([`narrow_worker_thread`]); filters stack, so the narrower wins there.
//!
//! Runtime control's thread (`--api-socket`, [`crate::api::server`]) starts after all this,
//! so it runs confined: forwards it adds are bound with the allow-list's `socket`, `bind` and
//! `listen`, as the nobody user when started as root, and a unix-socket forward only where
//! Landlock lets the backend make sockets (the temporary directory).
//!
//! The launcher confines itself in its own way, as the launcher's children (smbd, the guest
//! forwards' commands) need: the same user, no new privileges, no core dumps, no seccomp
//! filter or Landlock domain (children inherit both, and the programs' needs are theirs).
//!
//! `--sandbox=off` skips all of it (for debugging); `--sandbox=log` installs the seccomp
//! filter with "log" instead of "kill" as its default, so the kernel logs each call outside the
//! list (`dmesg`, audit type 1326) and lets it run.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};
use policy::NetPlan;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{exit, sys};

/// `--sandbox`: how much confinement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Confined (the default): calls outside the seccomp allow-list kill the process.
    #[default]
    On,
    /// No confinement at all (for debugging): started as root, stays root.
    Off,
    /// Confined, but calls outside the allow-list are logged by the kernel and allowed.
    Log,
}

/// The user (and group) to run as, from `--runas USER[:GROUP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// The default `--runas` user.
pub const DEFAULT_USER: &str = "nobody";

/// Parses `USER` or `USER:GROUP`, names or numeric IDs. `USER` alone runs in the user's
/// primary group (a numeric user without a password entry: the group of the same number).
/// The error says what is wrong with the value, for one line after `--runas VALUE: `.
pub fn parse_runas(spec: &str) -> Result<RunAs, String> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err("no user".into());
    }
    let found = match user.parse::<u32>() {
        Ok(uid) => sys::find_user(None, uid),
        Err(_) => sys::find_user(Some(user), 0),
    }
    .map_err(|e| format!("looking up user {user}: {e}"))?;
    let (uid, primary) = match (user.parse::<u32>(), found) {
        (_, Some(found)) => (found.uid, found.gid),
        (Ok(uid), None) => (uid, uid),
        (Err(_), None) => return Err(format!("no user {user}")),
    };
    let gid = match group {
        None => primary,
        Some("") => return Err("no group after ':'".into()),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => sys::find_group(group)
                .map_err(|e| format!("looking up group {group}: {e}"))?
                .ok_or_else(|| format!("no group {group}"))?,
        },
    };
    Ok(RunAs { uid, gid })
}

/// Confinement decided from the command line, entered once setup is done.
#[derive(Debug)]
pub struct Sandbox {
    mode: Mode,
    /// Whom to become: set when started as root and not `--sandbox=off`.
    runas: Option<RunAs>,
}

/// Why the backend could not confine itself.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("starting the guest forward launcher failed")]
    Launcher(#[source] io::Error),
    #[error("starting the janitor failed")]
    Janitor(#[source] io::Error),
    #[error("disabling core dumps failed")]
    Core(#[source] io::Error),
    #[error("switching to user {uid}, group {gid} failed")]
    User {
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("setting no_new_privs failed")]
    NoNewPrivs(#[source] io::Error),
    #[error("the Landlock ruleset failed")]
    Landlock(#[source] landlock::RulesetError),
    #[error("the seccomp filter failed: {0}")]
    Seccomp(String),
}

impl Sandbox {
    /// Decides whom to run as: `runas` (default [`DEFAULT_USER`]) if this process is root,
    /// nobody else otherwise. A bad `--runas` is the `Err` (for one line, exit 2).
    pub fn new(mode: Mode, runas: Option<&str>) -> Result<Sandbox, String> {
        if mode == Mode::Off {
            return Ok(Sandbox { mode, runas: None });
        }
        if sys::effective_uid() != 0 {
            if let Some(spec) = runas {
                log::debug!("--runas {spec} ignored: not started as root");
            }
            return Ok(Sandbox { mode, runas: None });
        }
        let spec = runas.unwrap_or(DEFAULT_USER);
        let runas = parse_runas(spec).map_err(|e| format!("--runas {spec}: {e}"))?;
        Ok(Sandbox {
            mode,
            runas: Some(runas),
        })
    }

    /// Who smbd runs as (user and group IDs), if not this process's effective user.
    pub fn smb_owner(&self) -> Option<(u32, u32)> {
        self.runas.as_ref().map(|r| (r.uid, r.gid))
    }

    /// Confines the process (see the module's comment). Call it while the process has one
    /// thread, after everything is opened; `removed_at_exit` are the paths the backend removes
    /// when it ends (files and directories it made).
    pub fn enter(&self, plan: &NetPlan, removed_at_exit: &[PathBuf]) -> Result<(), SandboxError> {
        if self.mode == Mode::Off {
            log::info!("--sandbox=off: not confined");
            return Ok(());
        }
        if !plan.guest_forwards.is_empty() {
            let runas = self.runas.clone();
            let launcher =
                netcore::launcher::Launcher::fork(plan.guest_forwards.clone(), move || {
                    confine_launcher(runas.as_ref())
                })
                .map_err(SandboxError::Launcher)?;
            log::debug!("guest forward launcher: pid {}", launcher.pid());
            netcore::launcher::install(launcher);
        }
        if let Some(runas) = &self.runas
            && runas.uid != 0
            && exit::anything_registered()
            && let Err(e) = start_janitor(self.mode)
        {
            // Serving matters more than tidying up after: said, and on without one.
            log::warn!("{}: the files removed at exit may stay", error_chain(&e));
        }
        sys::forbid_core_dumps().map_err(SandboxError::Core)?;
        if let Some(RunAs { uid, gid }) = self.runas {
            sys::switch_user(uid, gid).map_err(|source| SandboxError::User { uid, gid, source })?;
            log::debug!("running as user {uid}, group {gid}");
        }
        sys::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        restrict_filesystem(plan, removed_at_exit)?;
        install_seccomp(self.mode)?;
        Ok(())
    }
}

/// The janitor's filter, compiled by [`start_janitor`] before the fork.
static JANITOR_FILTER: OnceLock<BpfProgram> = OnceLock::new();

/// `e` and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    line
}

/// Forks the janitor (see [`exit`]'s module comment), which stays root to remove what the
/// `--runas` user may not, and gives the backend the pipe's write end, never closed: the
/// janitor sees end of file when the backend exits.
fn start_janitor(mode: Mode) -> Result<(), SandboxError> {
    let failed = SandboxError::Janitor;
    let devnull = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(failed)?;
    let (reader, writer) = std::io::pipe().map_err(failed)?;
    let reader = OwnedFd::from(reader);
    let program = janitor_filter(mode, reader.as_raw_fd())
        .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    if JANITOR_FILTER.set(program).is_err() {
        return Err(failed(io::Error::other("a janitor was already started")));
    }
    let pid = sys::fork_janitor(reader, devnull.as_fd(), exit::janitor_quiet()).map_err(failed)?;
    // Held until the process exits, whichever way: the janitor's signal to clean up.
    std::mem::forget(OwnedFd::from(writer));
    exit::janitor_started();
    log::debug!("janitor: pid {pid}");
    Ok(())
}

/// The janitor's process: named `vnu-janitor`, no core dumps, no new privileges, its own
/// filter, then its work.
/// Uses only the standard streams and `pipe` (never `log`), as [`sys::fork_janitor`] needs.
pub(crate) fn janitor_main(pipe: OwnedFd) -> i32 {
    let confined = sys::set_thread_name(c"vnu-janitor")
        .and_then(|()| sys::forbid_core_dumps())
        .and_then(|()| sys::set_no_new_privs())
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let program = JANITOR_FILTER.get().ok_or("no filter")?;
            seccompiler::apply_filter(program).map_err(|e| e.to_string())
        });
    if let Err(e) = confined {
        sys::write_stderr(format!("vhost-net-user janitor: confining: {e}\n").as_bytes());
        return 1;
    }
    exit::janitor(pipe)
}

/// What the janitor may do: wait on its pipe (`read` of that descriptor only), look at paths
/// without following links, list and remove directories, unlink, write to standard error,
/// allocate, exit. Everything else kills it (is logged under `--sandbox=log`).
fn janitor_filter(mode: Mode, pipe: RawFd) -> Result<BpfProgram, String> {
    let bad = |e: &dyn std::fmt::Display| e.to_string();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| bad(&e))?;
    let mismatch = match mode {
        Mode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    let arg_is = |arg: u8, value: u64| -> Result<SeccompRule, seccompiler::BackendError> {
        SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            value,
        )?])
    };
    let plain = [
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_unlinkat,
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        plain.iter().map(|&nr| (nr, Vec::new())).collect();
    let build = || -> Result<_, seccompiler::BackendError> {
        Ok([
            (libc::SYS_read, vec![arg_is(0, pipe as u64)?]),
            (libc::SYS_write, vec![arg_is(0, 2)?]),
            // Duplicating a directory's descriptor (F_DUPFD_CLOEXEC), and F_GETFD, with which
            // std's debug builds check that a descriptor they close is open.
            (
                libc::SYS_fcntl,
                vec![
                    arg_is(1, libc::F_DUPFD_CLOEXEC as u64)?,
                    arg_is(1, libc::F_GETFD as u64)?,
                ],
            ),
            // Opening directories only.
            (
                libc::SYS_openat,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(libc::O_DIRECTORY as u64),
                    libc::O_DIRECTORY as u64,
                )?])?],
            ),
        ])
    };
    rules.extend(build().map_err(|e| bad(&e))?);
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .and_then(TryInto::try_into)
        .map_err(|e| bad(&e))
}

/// The launcher's confinement: the backend's user, no new privileges, no core dumps.
fn confine_launcher(runas: Option<&RunAs>) -> io::Result<()> {
    sys::forbid_core_dumps()?;
    if let Some(RunAs { uid, gid }) = runas {
        sys::switch_user(*uid, *gid)?;
    }
    sys::set_no_new_privs()
}

/// Landlock: reading only the TFTP root; making and removing only the daemon sockets in the
/// temporary directory and what is removed at exit. Quietly nothing where the kernel lacks it.
fn restrict_filesystem(plan: &NetPlan, removed_at_exit: &[PathBuf]) -> Result<(), SandboxError> {
    let abi = ABI::V6;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let remove = AccessFs::RemoveFile | AccessFs::RemoveDir;
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
    if let Some(root) = &plan.tftp_root {
        rules.push((root.clone(), read));
    }
    // server.rs's per-connection daemon socket: a private directory with one socket in it;
    // smbd's directory (removed at exit) is there too.
    rules.push((
        std::env::temp_dir(),
        AccessFs::MakeDir | AccessFs::MakeSock | remove,
    ));
    for path in removed_at_exit {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        rules.push((parent.to_owned(), remove));
        if path.is_dir() {
            rules.push((path.clone(), remove | AccessFs::ReadDir));
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .map_err(SandboxError::Landlock)?;
    for (path, access) in rules {
        // A path that is gone cannot be reached either; nothing to allow.
        let Ok(fd) = PathFd::new(&path) else {
            continue;
        };
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(SandboxError::Landlock)?;
    }
    let status = ruleset.restrict_self().map_err(SandboxError::Landlock)?;
    match status.ruleset {
        RulesetStatus::NotEnforced => log::debug!("Landlock: not supported by this kernel"),
        RulesetStatus::PartiallyEnforced => log::debug!("Landlock: partly enforced"),
        RulesetStatus::FullyEnforced => log::debug!("Landlock: enforced"),
    }
    Ok(())
}

/// The vring worker's narrower filter, compiled by [`install_seccomp`] for
/// [`narrow_worker_thread`].
static WORKER_FILTER: OnceLock<BpfProgram> = OnceLock::new();

thread_local! {
    static NARROWED: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling thread, a vring worker (the thread that handles what the guest sends),
/// the worker's narrower filter on its first call: no directories, no socket pairs, no
/// threads, no `prctl`, no more filters. Nothing when the process is not confined.
pub fn narrow_worker_thread() {
    let Some(program) = WORKER_FILTER.get() else {
        return;
    };
    NARROWED.with(|done| {
        if !done.replace(true)
            && let Err(e) = seccompiler::apply_filter(program)
        {
            log::warn!("seccomp: the worker's filter failed: {e}");
        }
    });
}

/// The seccomp filters: the allow-list, and `clone3` answered ENOSYS (its flags are in memory
/// a filter cannot read; the C library then falls back to `clone`, whose flags it can).
fn install_seccomp(mode: Mode) -> Result<(), SandboxError> {
    let bad = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| bad(&e))?;
    let mismatch = match mode {
        Mode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    let allow: BpfProgram = SeccompFilter::new(
        allowed_syscalls_for(Thread::Any).map_err(|e| bad(&e))?,
        mismatch.clone(),
        SeccompAction::Allow,
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| bad(&e))?;
    let no_clone3: BpfProgram = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| bad(&e))?;
    let worker: BpfProgram = SeccompFilter::new(
        allowed_syscalls_for(Thread::Worker).map_err(|e| bad(&e))?,
        mismatch,
        SeccompAction::Allow,
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| bad(&e))?;
    let _ = WORKER_FILTER.set(worker);
    // The allow-list last: its seccomp() admits only the worker's filter's flags.
    seccompiler::apply_filter_all_threads(&no_clone3).map_err(|e| bad(&e))?;
    seccompiler::apply_filter_all_threads(&allow).map_err(|e| bad(&e))?;
    log::debug!(
        "seccomp: {} filter installed",
        match mode {
            Mode::Log => "logging",
            _ => "killing",
        }
    );
    Ok(())
}

/// `ioctl` requests the backend makes: queue sizes, non-blocking and close-on-exec switches,
/// and the terminal queries of the logger.
const IOCTLS: &[libc::c_ulong] = &[
    libc::FIONREAD,
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
    libc::TIOCOUTQ,
    libc::TCGETS,
    libc::TIOCGWINSZ,
];

/// `prctl` options the backend uses once confined: naming threads (Rust's std, as each thread
/// starts), naming anonymous mappings (the C library), and `no_new_privs` (set again by
/// seccompiler before the worker's filter). Not `PR_SET_DUMPABLE`, which would undo ours.
const PRCTLS: &[libc::c_int] = &[
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    libc::PR_SET_NO_NEW_PRIVS,
    libc::PR_SET_VMA,
];

/// Which threads an allow-list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// Every thread: what any of them needs.
    Any,
    /// The vring worker (see [`narrow_worker_thread`]).
    Worker,
}

/// What the worker never does: directories and removal (setup and exit), socket pairs
/// (connections), waiting for signals (the signal thread), threads, `prctl`, filters.
const NOT_FOR_WORKER: &[libc::c_long] = &[
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_getdents64,
    libc::SYS_fchmod,
    libc::SYS_fchown,
    libc::SYS_close_range,
    libc::SYS_socketpair,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
];

/// The system calls the backend makes once confined, on every thread or on the vring worker:
/// found by running the whole test suite under `--sandbox=log`, then reasoned over. `clone`
/// only with `CLONE_THREAD`, `ioctl` only with `IOCTLS`, `prctl` only with `PRCTLS`,
/// `seccomp` only to add a filter.
pub fn allowed_syscalls_for(
    thread: Thread,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules = allowed_syscalls()?;
    if thread == Thread::Worker {
        for nr in NOT_FOR_WORKER {
            rules.remove(nr);
        }
    }
    Ok(rules)
}

// `c_ulong` (the ioctl requests) is `u64` only on 64-bit targets.
#[allow(clippy::useless_conversion)]
fn allowed_syscalls() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let plain: &[libc::c_long] = &[
        // Memory: the allocator, and guest memory mapped on SET_MEM_TABLE.
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        // Descriptors and files: reading and writing sockets, eventfds and timerfds, TFTP's
        // files, the pcap; the daemon sockets' directory; removal at exit.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_lseek,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_fcntl,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_getdents64,
        libc::SYS_mkdirat,
        libc::SYS_unlinkat,
        libc::SYS_fchmod,
        libc::SYS_fchown,
        // passt mode's log file, cut to its --log-size (a descriptor opened before confinement).
        libc::SYS_ftruncate,
        libc::SYS_pipe2,
        libc::SYS_eventfd2,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_ppoll,
        // Sockets: flows, forwards, ping sockets, the vhost-user connection and its relay.
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept4,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        libc::SYS_shutdown,
        // Threads, signals, time, randomness.
        libc::SYS_clone3,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_sigaltstack,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    let legacy: &[libc::c_long] = &[
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_unlink,
        libc::SYS_rmdir,
        libc::SYS_mkdir,
        libc::SYS_poll,
        libc::SYS_epoll_wait,
        libc::SYS_accept,
        libc::SYS_getrlimit,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let legacy: &[libc::c_long] = &[];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = plain
        .iter()
        .chain(legacy)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )?])?],
    );
    rules.insert(
        libc::SYS_prctl,
        PRCTLS
            .iter()
            .map(|&option| {
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    option as u64,
                )?])
            })
            .collect::<Result<_, _>>()?,
    );
    // Reading resource limits (getrlimit is prlimit64 in the C library), never setting them.
    rules.insert(
        libc::SYS_prlimit64,
        vec![SeccompRule::new(vec![
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0)?,
            SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)?,
        ])?],
    );
    rules.insert(
        libc::SYS_seccomp,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            u64::from(libc::SECCOMP_SET_MODE_FILTER),
        )?])?],
    );
    rules.insert(
        libc::SYS_ioctl,
        IOCTLS
            .iter()
            .map(|&request| {
                SeccompRule::new(vec![SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    u64::from(request),
                )?])
            })
            .collect::<Result<_, _>>()?,
    );
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runas_takes_names_and_numbers() {
        let nobody = sys::find_user(Some("nobody"), 0).unwrap().expect("nobody");
        assert_eq!(
            parse_runas("nobody"),
            Ok(RunAs {
                uid: nobody.uid,
                gid: nobody.gid
            })
        );
        assert_eq!(
            parse_runas(&format!("nobody:{}", nobody.gid)),
            Ok(RunAs {
                uid: nobody.uid,
                gid: nobody.gid
            })
        );
        assert_eq!(parse_runas("root:root"), Ok(RunAs { uid: 0, gid: 0 }));
        assert_eq!(parse_runas("0"), Ok(RunAs { uid: 0, gid: 0 }));
        assert_eq!(
            parse_runas("nobody:0"),
            Ok(RunAs {
                uid: nobody.uid,
                gid: 0
            })
        );
        // A numeric user unknown to the password database: its group is the same number.
        assert_eq!(
            parse_runas("3999999"),
            Ok(RunAs {
                uid: 3_999_999,
                gid: 3_999_999
            })
        );
        assert_eq!(
            parse_runas("3999999:12"),
            Ok(RunAs {
                uid: 3_999_999,
                gid: 12
            })
        );
    }

    #[test]
    fn a_bad_runas_says_what_is_wrong() {
        assert_eq!(
            parse_runas("vnu-no-such-user"),
            Err("no user vnu-no-such-user".into())
        );
        assert_eq!(
            parse_runas("nobody:vnu-no-such-group"),
            Err("no group vnu-no-such-group".into())
        );
        assert_eq!(parse_runas(""), Err("no user".into()));
        assert_eq!(parse_runas(":0"), Err("no user".into()));
        assert_eq!(parse_runas("nobody:"), Err("no group after ':'".into()));
    }

    /// Run as a child of the test below (`VNU_SECCOMP_CHILD`): confined, a thread and a
    /// socket work; starting a program must kill the process.
    #[test]
    fn starting_a_program_under_the_filter_kills_the_process() {
        use std::os::unix::process::ExitStatusExt;
        const TEST: &str = "sandbox::tests::starting_a_program_under_the_filter_kills_the_process";
        if std::env::var_os("VNU_SECCOMP_CHILD").is_some() {
            install_seccomp(Mode::On).unwrap();
            let socket = std::thread::spawn(|| std::net::UdpSocket::bind("127.0.0.1:0").is_ok())
                .join()
                .unwrap();
            println!("confined: thread and socket {socket}");
            let started = std::process::Command::new("true").status();
            println!("still alive after starting a program: {started:?}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("VNU_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("confined: thread and socket true"),
            "the child did not get as far as the exec:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{}\n{stdout}",
            out.status
        );
    }

    /// Run as a child of the test below (`VNU_JANITOR_CHILD`, a directory): under the
    /// janitor's filter, the janitor removes a registered tree and file (its pipe already at
    /// end of file); then opening a file kills the process.
    #[test]
    fn the_janitor_removes_a_tree_under_its_filter_which_kills_on_anything_else() {
        use std::os::unix::process::ExitStatusExt;
        const TEST: &str = "sandbox::tests::the_janitor_removes_a_tree_under_its_filter_which_kills_on_anything_else";
        if let Some(dir) = std::env::var_os("VNU_JANITOR_CHILD") {
            let dir = PathBuf::from(dir);
            exit::remove_tree_at_exit(&dir.join("tree"));
            exit::remove_at_exit(&dir.join("file"));
            let (reader, writer) = std::io::pipe().unwrap();
            drop(writer);
            let reader = OwnedFd::from(reader);
            let program = janitor_filter(Mode::On, reader.as_raw_fd()).unwrap();
            sys::set_no_new_privs().unwrap();
            seccompiler::apply_filter(&program).unwrap();
            let status = exit::janitor(reader);
            sys::write_stderr(format!("\njanitor: {status}\n").as_bytes());
            let opened = std::fs::File::open("/proc/self/status").is_ok();
            sys::write_stderr(format!("still alive after opening a file: {opened}\n").as_bytes());
            return;
        }
        let dir = std::env::temp_dir().join(format!("vnu-janitor-filter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tree/a/b")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/keep"), "x").unwrap();
        std::fs::write(dir.join("tree/a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("tree/a/link")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("VNU_JANITOR_CHILD", &dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let left: Vec<bool> = ["tree", "file", "outside/keep"]
            .iter()
            .map(|p| dir.join(p).exists())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(stderr.contains("janitor: 0"), "{}\n{stderr}", out.status);
        assert_eq!(left, [false, false, true], "tree, file, outside/keep");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{}\n{stderr}",
            out.status
        );
    }

    /// Run as a child (`VNU_LANDLOCK_CHILD`, a directory): under Landlock the TFTP root reads,
    /// and nothing else does; nothing can be written, even there.
    #[test]
    fn landlock_leaves_only_the_tftp_root_readable() {
        const TEST: &str = "sandbox::tests::landlock_leaves_only_the_tftp_root_readable";
        if let Some(dir) = std::env::var_os("VNU_LANDLOCK_CHILD") {
            let root = PathBuf::from(dir);
            let mut plan = NetPlan::slirp_default();
            plan.tftp_root = Some(root.join("tftp"));
            restrict_filesystem(&plan, &[]).unwrap();
            let show = |r: std::io::Result<String>| match r {
                Ok(text) => format!("read {text:?}"),
                Err(e) => format!("{:?}", e.kind()),
            };
            // On a line of its own: libtest's "test NAME ..." has no newline yet.
            println!(
                "\ntftp: {}",
                show(std::fs::read_to_string(root.join("tftp/file")))
            );
            println!(
                "outside: {}",
                show(std::fs::read_to_string(root.join("outside")))
            );
            println!(
                "write: {}",
                show(std::fs::write(root.join("tftp/new"), "x").map(|()| String::new()))
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("vnu-landlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tftp")).unwrap();
        std::fs::write(dir.join("tftp/file"), "served").unwrap();
        std::fs::write(dir.join("outside"), "secret").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("VNU_LANDLOCK_CHILD", &dir)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| {
                ["tftp:", "outside:", "write:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert_eq!(
            lines,
            [
                "tftp: read \"served\"",
                "outside: PermissionDenied",
                "write: PermissionDenied"
            ],
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_allow_list_compiles_to_a_filter_without_exec_or_fork() {
        let worker = allowed_syscalls_for(Thread::Worker).unwrap();
        for nr in [
            libc::SYS_mkdirat,
            libc::SYS_unlinkat,
            libc::SYS_clone,
            libc::SYS_prctl,
        ] {
            assert!(
                !worker.contains_key(&nr),
                "syscall {nr} allowed to the worker"
            );
        }
        let rules = allowed_syscalls_for(Thread::Any).unwrap();
        for nr in [libc::SYS_execve, libc::SYS_execveat, libc::SYS_ptrace] {
            assert!(!rules.contains_key(&nr), "syscall {nr} allowed");
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [libc::SYS_fork, libc::SYS_vfork] {
            assert!(!rules.contains_key(&nr), "syscall {nr} allowed");
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )
        .unwrap();
        let program: BpfProgram = filter.try_into().unwrap();
        assert!(!program.is_empty());
    }
}
