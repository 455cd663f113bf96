//! Command line, following QEMU's conventions for vhost-user backend programs
//! (docs/interop/vhost-user.rst, "Backend program conventions").

use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{ArgAction, Parser};
use netcore::EngineOptions;
use netcore::capture::Capture;
use netcore::control::Control;
use netcore::nat::{self, Upstream};
use policy::ConfigError;

use crate::args::PolicyArgs;
use crate::error::error_chain;
use crate::exit;
use crate::sandbox::{self, Sandbox};
use crate::server::{self, ServeConfig};
use crate::stream;
use crate::sys;
use crate::sysconfig;

#[derive(Parser, Debug)]
#[command(
    name = "vhost-net-user",
    version,
    about = "vhost-user virtio-net backend: slirp-compatible user-mode networking for QEMU guests"
)]
pub struct Args {
    /// Listen on this UNIX socket; QEMU connects to it (`-chardev socket,path=PATH`).
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,

    /// Serve the already-listening UNIX socket inherited as this file descriptor.
    #[arg(long, value_name = "N", conflicts_with = "stream")]
    pub fd: Option<i32>,

    /// Instead of vhost-user, listen on this UNIX socket for QEMU's `-netdev stream`
    /// (frames with a 4-byte big-endian length, as passt's socket mode): no shared memory needed.
    #[arg(long, value_name = "PATH", conflicts_with = "socket_path")]
    pub stream: Option<PathBuf>,

    /// Permissions of the socket this creates (`--socket-path`, `--stream`), in octal. The
    /// default lets only our own user (and root) connect: whoever connects gets a guest's
    /// network, and the first to connect holds it.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_socket_mode)]
    pub socket_mode: u32,

    /// Group of the socket this creates (a name or a number), for a frontend running as another
    /// user of that group (with `--socket-mode 0660`).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Owner of the socket this creates (a name or a number), for a frontend running as
    /// another user when the backend is started as root (libvirt's QEMU: libvirt-qemu).
    #[arg(long, value_name = "USER")]
    pub socket_owner: Option<String>,

    /// Serve runtime control on this UNIX socket (created 0600): slirp4netns's JSON API
    /// (add_hostfwd, list_hostfwd, remove_hostfwd) plus query_stats; `vhost-net-user ctl
    /// PATH ...` speaks it with QEMU's monitor syntax.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Print the backend's capabilities as JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Exit when the first frontend disconnects instead of waiting for the next.
    #[arg(long)]
    pub one_off: bool,

    /// Record every frame, both ways, into this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Write the process ID into this file (removed at exit).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Relay DNS queries to the first nameserver of this file instead of /etc/resolv.conf.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,

    /// Most TCP connections, and most UDP flows, open at once (per queue pair in use).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_flows: u32,

    /// Most virtio queue pairs the vhost-user device offers (QEMU's `queues=`, libvirt's
    /// `<driver queues=>`): one worker thread each. 1 turns multiqueue off.
    #[arg(long, value_name = "N", default_value_t = crate::device::DEFAULT_MAX_QUEUE_PAIRS,
          value_parser = clap::value_parser!(u16).range(1..=crate::device::MAX_QUEUE_PAIRS as i64))]
    pub max_queue_pairs: u16,

    /// More log output (repeat for more).
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only log errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Confinement (see README, Security): `on`, the default; `off`, for debugging, runs
    /// unconfined (and, started as root, as root); `log` lets the kernel log system calls
    /// outside the seccomp allow-list instead of killing the process.
    #[arg(long, value_enum, value_name = "on|off|log", default_value = "on")]
    pub sandbox: sandbox::Mode,

    /// Started as root, run as this user once sockets and files are open: USER or
    /// USER:GROUP, names or numeric IDs [default: nobody]. Ignored when not started as root.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub runas: Option<String>,

    /// Read defaults from this TOML file instead of /etc/vhost-net-user/config.toml (or
    /// $VHOST_NET_USER_CONFIG); options given here win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What the guest sees: addresses, DHCP, forwards (libvirt XML, QEMU or passt options).
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Which options the command line gave (see [`sysconfig`]).
    #[arg(skip)]
    pub given: sysconfig::Given,

    /// The configuration file's log level, used without `-v` or `-q`.
    #[arg(skip)]
    pub default_log_level: Option<log::LevelFilter>,
}

/// A configuration the user got wrong: reported on one line, exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Forward(#[from] netcore::forward::ForwardError),
    #[error(transparent)]
    Smb(#[from] netcore::smb::SmbError),
    #[error("runtime control: an eventfd")]
    Control(#[source] std::io::Error),
    #[error("one of --socket-path, --fd or --stream is required")]
    NoSocket,
    #[error("--fd {fd}")]
    BadFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {}", path.display())]
    BadSocketPath {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--pcap {}", path.display())]
    BadPcap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--resolv-conf {}", path.display())]
    BadResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--socket-group {0}: no such group")]
    BadSocketGroup(String),
    #[error("--socket-owner {0}: no such user")]
    BadSocketOwner(String),
    #[error("--pid-file {}", path.display())]
    BadPidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The JSON QEMU's backend conventions ask `--print-capabilities` to print.
pub const CAPABILITIES: &str = "{\n  \"type\": \"net\"\n}";

impl Args {
    pub fn log_level(&self) -> log::LevelFilter {
        if self.quiet {
            return log::LevelFilter::Error;
        }
        match self.verbose {
            0 => self.default_log_level.unwrap_or(log::LevelFilter::Info),
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        }
    }

    /// The DNS upstream: `--resolv-conf` must be readable; /etc/resolv.conf may be missing.
    fn upstream(&self) -> Result<Upstream, UsageError> {
        let (path, required) = match &self.resolv_conf {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("/etc/resolv.conf"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(nat::parse_resolv_conf(&text)),
            Err(source) if required => Err(UsageError::BadResolvConf { path, source }),
            Err(e) => {
                log::warn!("{}: {e}; DNS goes to 127.0.0.1", path.display());
                Ok(nat::parse_resolv_conf(""))
            }
        }
    }

    fn listener(&self) -> Result<UnixListener, UsageError> {
        if let Some(fd) = self.fd {
            return sys::listener_from_fd(fd).map_err(|source| UsageError::BadFd { fd, source });
        }
        let path = self
            .socket_path
            .as_ref()
            .or(self.stream.as_ref())
            .ok_or(UsageError::NoSocket)?;
        let flag = if self.stream.is_some() {
            "--stream"
        } else {
            "--socket-path"
        };
        let bad = |source| UsageError::BadSocketPath {
            flag,
            path: path.clone(),
            source,
        };
        // A socket left by a backend that was killed would make bind fail; anything else at
        // that path is the user's and stays.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(bad)?;
            }
        }
        let listener = listen_then_publish(path, &self.socket_access()?).map_err(bad)?;
        exit::remove_at_exit(path);
        Ok(listener)
    }
}

impl Args {
    fn socket_access(&self) -> Result<SocketAccess, UsageError> {
        Ok(SocketAccess {
            mode: self.socket_mode,
            group: match &self.socket_group {
                Some(group) => {
                    Some(group_id(group).ok_or_else(|| UsageError::BadSocketGroup(group.clone()))?)
                }
                None => None,
            },
            owner: match &self.socket_owner {
                Some(user) => {
                    Some(user_id(user).ok_or_else(|| UsageError::BadSocketOwner(user.clone()))?)
                }
                None => None,
            },
        })
    }
}

/// The `--api-socket` listener: 0600 whatever `--socket-mode` says (whoever reaches it
/// opens host ports), a stale socket replaced, removed at exit.
fn api_listener(path: &Path) -> Result<UnixListener, UsageError> {
    let bad = |source| UsageError::BadSocketPath {
        flag: "--api-socket",
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(bad)?;
        }
    }
    let listener = listen_then_publish(path, &SocketAccess::default()).map_err(bad)?;
    exit::remove_at_exit(path);
    Ok(listener)
}

/// Who may connect to the socket we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketAccess {
    mode: u32,
    group: Option<u32>,
    owner: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: 0o600,
            group: None,
            owner: None,
        }
    }
}

pub(crate) fn parse_socket_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("an octal mode, 0 to 0777".into()),
    }
}

/// A group's id from a number or from its name (the system's group database, as `--runas`
/// looks names up).
fn group_id(group: &str) -> Option<u32> {
    match group.parse() {
        Ok(gid) => Some(gid),
        Err(_) => sys::find_group(group).ok().flatten(),
    }
}

/// A user's id from a number or from its name (the system's user database).
fn user_id(user: &str) -> Option<u32> {
    match user.parse() {
        Ok(uid) => Some(uid),
        Err(_) => sys::find_user(Some(user), 0).ok().flatten().map(|u| u.uid),
    }
}

/// Binds and listens under a hidden name beside `path`, gives it `access`, then renames the
/// socket into place.
///
/// `bind` creates the file before `listen` makes it accept, so whoever waits for the file to
/// appear (QEMU started by a script, the tests) could meet a socket that refuses; renamed into
/// place, it accepts from its first moment, and with its final permissions: it is created
/// with none for others (umask 0177 around `bind`).
fn listen_then_publish(path: &Path, access: &SocketAccess) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(path).is_ok() {
        // bind's answer for a taken path; rename would silently replace the user's file.
        return Err(std::io::ErrorKind::AddrInUse.into());
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let hidden = dir.join(format!(".vnu-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&hidden);
    let bind_private = |at: &Path| {
        // Only threads that do not create files exist yet (setup runs before serving).
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(at);
        rustix::process::umask(old);
        let listener = bound?;
        let given = std::fs::set_permissions(at, std::fs::Permissions::from_mode(access.mode))
            .and_then(|()| match (access.owner, access.group) {
                (None, None) => Ok(()),
                (owner, group) => std::os::unix::fs::lchown(at, owner, group),
            });
        if let Err(e) = given {
            let _ = std::fs::remove_file(at);
            return Err(e);
        }
        Ok(listener)
    };
    // The hidden name can be too long for a socket address when `path` is near the limit.
    let Ok(listener) = bind_private(&hidden) else {
        return bind_private(path);
    };
    std::fs::rename(&hidden, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&hidden);
    })?;
    Ok(listener)
}

/// What differs when the program runs as passt ([`crate::passt_mode`]): its name in
/// messages, the exit status of a configuration error, where logs go, where the frontend
/// comes from, and whom to tell once it serves. [`Persona::default`] is vhost-net-user.
#[derive(Default)]
pub struct Persona {
    /// Prefix of the one-line errors on standard error (`vhost-net-user` when empty).
    pub name: &'static str,
    /// Exit status of a configuration error: 2, or passt's 1.
    pub usage_status: Option<i32>,
    /// Sets up logging (passt's destinations); `None`: standard error at `-v`/`-q`'s level.
    pub logger: Option<Box<dyn FnOnce()>>,
    /// One frontend already connected (passt's `--fd`), served instead of a listener.
    pub connected: Option<UnixStream>,
    /// The connected frontend speaks the stream link (passt's socket mode), not vhost-user.
    pub connected_stream: bool,
    /// Host nameservers replacing resolv.conf's, one per family (passt's `--dns-host`).
    pub dns_hosts: Vec<IpAddr>,
    /// Called once the frontend's socket is ready, the pid file written and the process
    /// confined, just before serving (passt's parent waits for it to go to the background).
    pub ready: Option<Box<dyn FnOnce()>>,
    /// Options as the user typed them, for the first word of an error (`--pid-file` was
    /// passt's `--pid`).
    pub spelling: &'static [(&'static str, &'static str)],
}

impl Persona {
    /// `message` with its first word as the user spelled the option.
    fn as_typed(&self, message: String) -> String {
        let first = message.split(' ').next().unwrap_or_default();
        match self.spelling.iter().find(|(ours, _)| *ours == first) {
            Some((ours, typed)) => format!("{typed}{}", &message[ours.len()..]),
            None => message,
        }
    }
}

impl std::fmt::Debug for Persona {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persona")
            .field("name", &self.name)
            .field("usage_status", &self.usage_status)
            .field("connected", &self.connected)
            .field("connected_stream", &self.connected_stream)
            .field("dns_hosts", &self.dns_hosts)
            .field("spelling", &self.spelling)
            .finish_non_exhaustive()
    }
}

/// Where frontends come from: a socket we listen on, or one connection handed to us.
enum Frontends {
    Listener(UnixListener),
    Connected(UnixStream),
}

/// Runs the program; returns the exit status.
pub fn run(args: Args) -> i32 {
    run_as(args, Persona::default())
}

/// Runs the program as `persona` says; returns the exit status.
pub fn run_as(mut args: Args, mut persona: Persona) -> i32 {
    let name = if persona.name.is_empty() {
        "vhost-net-user"
    } else {
        persona.name
    };
    let usage_status = persona.usage_status.unwrap_or(2);
    if args.print_capabilities {
        println!("{CAPABILITIES}");
        return 0;
    }
    if let Err(e) = sysconfig::apply_system_config(&mut args, std::env::var_os(sysconfig::PATH_ENV))
    {
        eprintln!("{name}: {}", error_chain(&e));
        return usage_status;
    }
    if args.policy.explain {
        return match args.policy.build() {
            Ok(resolved) => {
                print!(
                    "{}",
                    args.policy.explain_output(&resolved).unwrap_or_default()
                );
                0
            }
            Err(e) => {
                eprintln!("{name}: {}", error_chain(&e));
                usage_status
            }
        };
    }
    match persona.logger.take() {
        Some(init) => init(),
        None => env_logger::Builder::new()
            .filter_level(args.log_level())
            .parse_env("RUST_LOG")
            .target(env_logger::Target::Stderr)
            .init(),
    }

    // Before any thread exists, so that only the signal thread sees SIGTERM/SIGINT.
    if let Err(e) = exit::block_termination_signals() {
        eprintln!("{name}: blocking signals failed: {e}");
        return 1;
    }
    let sandbox = match Sandbox::new(args.sandbox, args.runas.as_deref()) {
        Ok(sandbox) => sandbox,
        Err(e) => {
            eprintln!("{name}: {}", persona.as_typed(e));
            return usage_status;
        }
    };
    match setup(&args, &sandbox, &mut persona) {
        Ok((config, frontends, api)) => {
            // Still one thread: confined now, everything started later is too.
            if let Err(e) = sandbox.enter(&config.plan, &exit::removed_at_exit()) {
                log::error!("confining the process: {}", error_chain(&e));
                exit::cleanup();
                return 1;
            }
            if let Some(listener) = api {
                let control = Arc::clone(&config.engine.control);
                if let Err(e) = crate::api::server::spawn(listener, control, config.plan.clone()) {
                    log::error!("starting the API socket's thread: {e}");
                    exit::cleanup();
                    return 1;
                }
            }
            exit::exit_on_termination_signal();
            if let Some(ready) = persona.ready.take() {
                ready();
            }
            let stream_link = args.stream.is_some() || persona.connected_stream;
            let served = match frontends {
                Frontends::Listener(l) if stream_link => stream::serve(l, &config),
                Frontends::Listener(l) => server::serve(l, &config),
                Frontends::Connected(s) if stream_link => stream::serve_connected(s, &config),
                Frontends::Connected(s) => server::serve_connected(s, &config),
            };
            let status = match served {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{}", error_chain(&e));
                    1
                }
            };
            exit::cleanup();
            status
        }
        Err(e) => {
            eprintln!("{name}: {}", persona.as_typed(error_chain(&e)));
            exit::cleanup();
            usage_status
        }
    }
}

fn setup(
    args: &Args,
    sandbox: &Sandbox,
    persona: &mut Persona,
) -> Result<(ServeConfig, Frontends, Option<UnixListener>), UsageError> {
    let resolved = args.policy.build()?;
    for warning in &resolved.warnings {
        log::warn!("{warning}");
    }
    let mut plan = resolved.plan;
    if let Some(share) = &plan.smb {
        let smb = netcore::smb::SmbServer::create(share, sandbox.smb_owner())?;
        exit::remove_tree_at_exit(smb.dir());
        log::info!(
            "smb: {} shared as \\\\{}\\qemu (smbd's files in {})",
            share.export.display(),
            share.addr,
            smb.dir().display()
        );
        // The share is two more guest forwards, now that smbd's directory exists.
        plan.guest_forwards.extend_from_slice(smb.guest_forwards());
    }
    let capture = match &args.pcap {
        Some(path) => Some(Arc::new(Mutex::new(Capture::create(path).map_err(
            |source| UsageError::BadPcap {
                path: path.clone(),
                source,
            },
        )?))),
        None => None,
    };
    let mut upstream = args.upstream()?;
    for host in &persona.dns_hosts {
        let server = Some(std::net::SocketAddr::new(*host, nat::DNS_PORT));
        match host {
            IpAddr::V4(_) => upstream.dns_v4 = server,
            IpAddr::V6(_) => upstream.dns_v6 = server,
        }
    }
    log::debug!("DNS upstream: {upstream:?}");
    // Each flow holds a host socket: up to --max-flows each of TCP, UDP and ping.
    let flow_fds = 3 * args.max_flows as usize;
    let rules = netcore::forward::open_rules(&plan, flow_fds)?;
    for fwd in rules.iter().flat_map(|(_, sockets)| sockets) {
        if let netcore::forward::Local::Unix(path) = &fwd.local {
            exit::remove_at_exit(path);
        }
    }
    log::debug!("forwarded ports: {rules:?}");
    let control = Arc::new(Control::new(rules).map_err(UsageError::Control)?);
    let api = match &args.api_socket {
        Some(path) => Some(api_listener(path)?),
        None => None,
    };
    if let Some(path) = &args.pid_file {
        use std::io::Write;
        netcore::capture::create_private_file(path)
            .and_then(|mut file| writeln!(file, "{}", std::process::id()))
            .map_err(|source| UsageError::BadPidFile {
                path: path.clone(),
                source,
            })?;
        exit::remove_at_exit(path);
    }
    // Last, once the API socket and the PID file are in place: a client that waits for the
    // vhost-user socket to appear (libvirt, QEMU, our tests) may then use them at once.
    let frontends = match persona.connected.take() {
        Some(stream) => Frontends::Connected(stream),
        None => Frontends::Listener(args.listener()?),
    };
    if plan.map_gateway_to_loopback && !plan.restrict {
        // As slirp4netns says at startup: the mapping is slirp's default, and a risk. Said once
        // the configuration is accepted, so that a refused one stays a one-line error.
        let gateways: Vec<String> = [
            plan.ipv4.as_ref().map(|v4| v4.gateway.to_string()),
            plan.ipv6.as_ref().map(|v6| v6.gateway.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !gateways.is_empty() {
            log::info!(
                "the host's loopback services are reachable from the guest at {} (--no-map-gw turns that off)",
                gateways.join(" and ")
            );
        }
    }
    log::info!(
        "serving on {}",
        match (
            &frontends,
            args.socket_path.as_ref().or(args.stream.as_ref())
        ) {
            (Frontends::Connected(_), _) => "the connected socket it was given".to_string(),
            (_, Some(path)) => path.display().to_string(),
            (_, None) => format!("fd {}", args.fd.unwrap_or(-1)),
        }
    );
    Ok((
        ServeConfig {
            plan,
            engine: EngineOptions {
                upstream,
                max_flows: args.max_flows as usize,
                control,
                ..EngineOptions::default()
            },
            one_off: args.one_off,
            capture,
            max_queue_pairs: args.max_queue_pairs,
        },
        frontends,
        api,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("vnu-cli-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_socket_appears_under_its_name_already_accepting() {
        let scratch = Scratch::new("publish");
        let path = scratch.0.join("vu.sock");
        let listener = listen_then_publish(&path, &SocketAccess::default()).unwrap();
        assert_eq!(names(&scratch.0), ["vu.sock"], "the hidden name is gone");
        let _client = UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn socket_owner_takes_a_name_or_a_number() {
        let nobody = sys::find_user(Some("nobody"), 0).unwrap().expect("nobody");
        let access = |owner: &str| {
            Args::try_parse_from([
                "vhost-net-user",
                "--socket-path",
                "vu.sock",
                "--socket-owner",
                owner,
            ])
            .unwrap()
            .socket_access()
        };
        assert_eq!(access("nobody").unwrap().owner, Some(nobody.uid));
        assert_eq!(access("4242").unwrap().owner, Some(4242));
        let err = access("no-such-user-vnu").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--socket-owner no-such-user-vnu: no such user"
        );
    }

    /// Root gives the socket away before it appears; anyone else is refused, and nothing of
    /// the attempt stays behind.
    #[test]
    fn the_socket_appears_with_its_owner() {
        use std::os::unix::fs::MetadataExt;
        let nobody = sys::find_user(Some("nobody"), 0).unwrap().expect("nobody");
        let scratch = Scratch::new("owner");
        let path = scratch.0.join("vu.sock");
        let access = SocketAccess {
            owner: Some(nobody.uid),
            ..SocketAccess::default()
        };
        let published = listen_then_publish(&path, &access);
        if sys::effective_uid() == 0 {
            let _listener = published.unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(meta.uid(), nobody.uid);
            assert_eq!(meta.gid(), 0, "the group is left alone");
            assert_eq!(meta.mode() & 0o777, 0o600);
        } else {
            assert_eq!(
                published.unwrap_err().kind(),
                std::io::ErrorKind::PermissionDenied
            );
            assert!(names(&scratch.0).is_empty());
        }
    }

    #[test]
    fn a_file_of_the_users_at_the_path_is_left_alone() {
        let scratch = Scratch::new("taken");
        let path = scratch.0.join("vu.sock");
        std::fs::write(&path, b"mine").unwrap();
        let err = listen_then_publish(&path, &SocketAccess::default()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(names(&scratch.0), ["vu.sock"]);
    }
}
