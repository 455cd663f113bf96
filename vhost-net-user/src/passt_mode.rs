//! Run as passt: started under the name `passt` (a symbolic link or a copy), the program takes
//! passt's command line and behaves toward its caller as passt does, so that libvirt,
//! libguestfs and QEMU's `-netdev passt`, which start passt by name, start this backend.
//!
//! # Theory of operation
//!
//! [`parse`] reads passt's options with clap ([`PasstArgs`]: every option passt has, so that
//! none is mistaken for a typo) and settles what passt settles by order (the last of `-q` and
//! `-d`, of `-4` and `-6`, of `-s` and `-F` wins). [`convert`] turns them into the program's
//! own [`cli::Args`] and refuses, in one line naming it, every option whose effect this
//! backend does not have (exit status 1, passt's). [`run`] then runs the program's one serve
//! path ([`cli::run_as`]) with passt's ways toward the caller ([`cli::Persona`]):
//!
//! * unless `-f`, it goes to the background as passt does: it forks, and the parent waits on a
//!   pipe. The child starts a new session, moves to `/`, sets everything up (the socket
//!   listening, its own pid in the `--pid` file), confines itself, then writes one byte to
//!   the pipe and points its standard streams at /dev/null. The parent exits 0 on that byte,
//!   1 if the pipe closes without it (the child failed, and said why on standard error, which
//!   it still shared with the parent). Paths are made absolute before the move to `/`.
//! * logs go to `--log-file` if given (kept under `--log-size`), otherwise to standard error
//!   in the foreground and to syslog (RFC 3164 datagrams on /dev/log, connected before
//!   confinement) in the background ([`logging`]); until the child is ready they are also
//!   copied to standard error, so that a caller that shows passt's errors shows ours.
//! * `-F`/`--fd` is one end of a socket pair (QEMU's `-netdev passt`): that one connection
//!   is served, in the stream framing or vhost-user, and the process exits when it closes.
//! * without `-s` or `-F`, the socket is the first free `/tmp/passt_N.socket`, N from 1 to
//!   64, as passt probes them.
//!
//! The guest's view is the program's default (the slirp profile): passt's address options
//! are read as the normal command line's passt-style options are (policy's `PasstOptions`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::cli::{self, Persona};
use crate::sys;

/// Exit status of a configuration error, as passt's.
pub const USAGE_STATUS: i32 = 1;

/// Whether the program was started as `passt`: the file name of `argv[0]`.
pub fn invoked_as_passt(argv0: Option<&OsStr>) -> bool {
    argv0.and_then(|a| Path::new(a).file_name()) == Some(OsStr::new("passt"))
}

/// passt's command line (passt(1), 2025 releases). Options passt has and this backend does
/// not implement are parsed too, hidden from `--help`, and refused by [`convert`].
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "passt",
    about = "vhost-net-user started as passt: slirp-compatible user-mode networking for QEMU guests, \
             taking passt's command line",
    after_help = "passt's other options (-i, -o, --outbound-if4/6, --fqdn, --no-dhcp-dns, \
                  --freebind, migration) have no equivalent here and are refused (exit 1), \
                  pasta's as passt refuses them.",
    disable_version_flag = true,
    infer_long_args = true,
    args_override_self = true
)]
pub struct PasstArgs {
    /// Be verbose
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Be extra verbose, implies --debug
    #[arg(long)]
    pub trace: bool,
    /// Don't print informational messages
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't run in background
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// No effect (deprecated in passt)
    #[arg(short = 'e', long, hide = true)]
    pub stderr: bool,
    /// Log (only) to given file
    #[arg(short = 'l', long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Maximum size of log file (default: 1 MiB); the oldest records make room
    #[arg(long, value_name = "BYTES", value_parser = parse_log_size)]
    pub log_size: Option<u64>,
    /// Run as given UID, GID, which can be numeric, or login and group names (when started as
    /// root; default: nobody)
    #[arg(long, value_name = "UID|UID:GID")]
    pub runas: Option<String>,
    /// Show version and exit
    #[arg(long)]
    pub version: bool,
    /// UNIX domain socket path (default: first free /tmp/passt_N.socket)
    #[arg(short = 's', long, alias = "socket-path", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// vhost-user on the socket instead of the stream framing
    #[arg(long)]
    pub vhost_user: bool,
    /// Print back-end capabilities in JSON format
    #[arg(long)]
    pub print_capabilities: bool,
    /// Accepted; migration is not supported, so no repair socket is made
    #[arg(long, value_name = "PATH")]
    pub repair_path: Option<String>,
    /// Use FD as pre-opened connected socket (implies --one-off)
    #[arg(short = 'F', long, value_name = "FD", value_parser = parse_fd)]
    pub fd: Option<i32>,
    /// Log guest-side traffic to pcap file
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Write own PID to the given file (removed at exit)
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,
    /// Assign MTU via DHCP/NDP (0: do not advertise)
    #[arg(short = 'm', long, value_name = "MTU")]
    pub mtu: Option<String>,
    /// Assign IPv4 or IPv6 address ADDR (read as the slirp profile reads it)
    #[arg(short = 'a', long, value_name = "ADDR")]
    pub address: Vec<String>,
    /// Assign IPv4 MASK, dot-decimal or bits
    #[arg(short = 'n', long, value_name = "MASK")]
    pub netmask: Option<String>,
    /// The gateway's MAC address as the guest sees it
    #[arg(short = 'M', long = "mac-addr", value_name = "ADDR")]
    pub mac_addr: Option<String>,
    /// Pass IPv4 or IPv6 address as gateway
    #[arg(short = 'g', long, value_name = "ADDR")]
    pub gateway: Vec<String>,
    /// Not supported
    #[arg(short = 'i', long, value_name = "NAME", hide = true)]
    pub interface: Option<String>,
    /// Not supported
    #[arg(short = 'o', long, value_name = "ADDR", hide = true)]
    pub outbound: Vec<String>,
    /// Not supported
    #[arg(long, value_name = "NAME", hide = true)]
    pub outbound_if4: Option<String>,
    /// Not supported
    #[arg(long, value_name = "NAME", hide = true)]
    pub outbound_if6: Option<String>,
    /// DNS address offered to the guest (its queries relayed to the host's resolver)
    #[arg(short = 'D', long, value_name = "ADDR")]
    pub dns: Vec<String>,
    /// The DNS address the guest is offered (accepted only as that address)
    #[arg(long, value_name = "ADDR")]
    pub dns_forward: Vec<String>,
    /// Host nameserver to direct queries to (default: first of /etc/resolv.conf)
    #[arg(long, value_name = "ADDR")]
    pub dns_host: Vec<String>,
    /// Space-separated list, search domains ('none': no list)
    #[arg(short = 'S', long, value_name = "LIST")]
    pub search: Vec<String>,
    /// Hostname to configure client with
    #[arg(short = 'H', long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Not supported
    #[arg(long, value_name = "NAME", hide = true)]
    pub fqdn: Option<String>,
    /// Not supported
    #[arg(long, hide = true)]
    pub no_dhcp_dns: bool,
    /// No search list in DHCP/DHCPv6/NDP
    #[arg(long)]
    pub no_dhcp_search: bool,
    /// Disable TCP protocol handler
    #[arg(long)]
    pub no_tcp: bool,
    /// Disable UDP protocol handler
    #[arg(long)]
    pub no_udp: bool,
    /// Disable ICMP/ICMPv6 protocol handler
    #[arg(long)]
    pub no_icmp: bool,
    /// Disable DHCP server
    #[arg(long)]
    pub no_dhcp: bool,
    /// Disable NDP responses
    #[arg(long)]
    pub no_ndp: bool,
    /// Disable DHCPv6 server
    #[arg(long)]
    pub no_dhcpv6: bool,
    /// Disable router advertisements
    #[arg(long)]
    pub no_ra: bool,
    /// No effect in passt mode (as in passt)
    #[arg(long, hide = true)]
    pub no_splice: bool,
    /// Not supported
    #[arg(long, hide = true)]
    pub freebind: bool,
    /// Don't map gateway address to host
    #[arg(long)]
    pub no_map_gw: bool,
    /// 'none', or the gateway address (the only one mapped to the host)
    #[arg(long, value_name = "ADDR")]
    pub map_host_loopback: Vec<String>,
    /// 'none' only (no address is mapped to the guest's)
    #[arg(long, value_name = "ADDR")]
    pub map_guest_addr: Vec<String>,
    /// Enable IPv4 operation only
    #[arg(short = '4', long)]
    pub ipv4_only: bool,
    /// Enable IPv6 operation only
    #[arg(short = '6', long)]
    pub ipv6_only: bool,
    /// Quit after handling one single client
    #[arg(short = '1', long)]
    pub one_off: bool,
    /// TCP port forwarding to guest
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC")]
    pub tcp_ports: Vec<String>,
    /// UDP port forwarding to guest
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC")]
    pub udp_ports: Vec<String>,

    // passt options this backend does not have (refused by `convert`).
    #[arg(short = 'T', long = "tcp-ns", value_name = "SPEC", hide = true)]
    pub tcp_ns: Vec<String>,
    #[arg(short = 'U', long = "udp-ns", value_name = "SPEC", hide = true)]
    pub udp_ns: Vec<String>,
    #[arg(long, hide = true)]
    pub migrate_exit: bool,
    #[arg(long, hide = true)]
    pub migrate_no_linger: bool,
    #[arg(long, value_name = "DELAY", hide = true)]
    pub stats: Option<String>,
    #[arg(short = 'c', long, value_name = "PATH", hide = true)]
    pub conf_path: Option<String>,
    #[arg(long, hide = true)]
    pub chroot_fallback: bool,

    // pasta's options, refused as passt refuses them.
    #[arg(short = 'I', long, value_name = "NAME", hide = true)]
    pub ns_ifname: Option<String>,
    #[arg(long, value_name = "SPEC", hide = true)]
    pub userns: Option<String>,
    #[arg(long, value_name = "SPEC", hide = true)]
    pub netns: Option<String>,
    #[arg(long, hide = true)]
    pub netns_only: bool,
    #[arg(long, value_name = "ADDR", hide = true)]
    pub ns_mac_addr: Option<String>,
    #[arg(long, hide = true)]
    pub no_netns_quit: bool,
    #[arg(long, hide = true)]
    pub config_net: bool,
    #[arg(long, hide = true)]
    pub no_copy_routes: bool,
    #[arg(long, hide = true)]
    pub no_copy_addrs: bool,
    #[arg(long, hide = true)]
    pub host_lo_to_ns_lo: bool,
    #[arg(long, hide = true)]
    pub dhcp_dns: bool,
    #[arg(long, hide = true)]
    pub dhcp_search: bool,
    #[arg(long, hide = true)]
    pub splice_only: bool,

    /// passt takes no arguments besides its options.
    #[arg(hide = true)]
    pub extra: Vec<String>,
}

/// `-F FD`: a descriptor above standard error, as passt requires.
fn parse_fd(text: &str) -> Result<i32, String> {
    match text.parse::<i32>() {
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err("a descriptor number above 2".into()),
    }
}

/// `--log-size BYTES`: at least passt's minimum.
fn parse_log_size(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= logging::MIN_LOG_SIZE => Ok(n),
        _ => Err(format!(
            "a size in bytes, at least {}",
            logging::MIN_LOG_SIZE
        )),
    }
}

/// What [`parse`] decided instead of returning options to run with: the exit status, the
/// message already printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

/// Parses passt's command line (`argv[0]` included). `--help`, `--version`,
/// `--print-capabilities` and a command line clap cannot read end here: the text is
/// printed, and the exit status returned.
pub fn parse<I, T>(argv: I) -> Result<PasstArgs, Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match PasstArgs::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return Err(clap_exit(&e)),
    };
    let mut args = match PasstArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => return Err(clap_exit(&e)),
    };
    settle_order(&mut args, &matches);
    if args.version {
        println!("passt (vhost-net-user {})", env!("CARGO_PKG_VERSION"));
        return Err(Exit(0));
    }
    if args.print_capabilities {
        println!("{}", cli::CAPABILITIES);
        return Err(Exit(0));
    }
    Ok(args)
}

/// Prints clap's answer: help on standard output (exit 0), an error as one line (exit 1).
fn clap_exit(e: &clap::Error) -> Exit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            Exit(0)
        }
        _ => {
            eprintln!("passt: {}", one_line(e));
            Exit(USAGE_STATUS)
        }
    }
}

/// clap's error without its usage and tips: its first line, without "error: ".
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// What passt settles by order: the last of `-q` and `-d`/`--trace`, of `-4` and `-6`, and of
/// `-s` and `-F` wins (though `-F` implied `--one-off`).
fn settle_order(args: &mut PasstArgs, m: &ArgMatches) {
    let last = |id: &str| {
        m.indices_of(id)
            .and_then(|i| i.max())
            .filter(|_| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
    };
    let verbose = last("debug").max(last("trace"));
    match (last("quiet"), verbose) {
        (Some(q), Some(v)) if q > v => {
            args.debug = false;
            args.trace = false;
        }
        (Some(_), Some(_)) => args.quiet = false,
        _ => {}
    }
    if let (Some(four), Some(six)) = (last("ipv4_only"), last("ipv6_only")) {
        if four > six {
            args.ipv6_only = false;
        } else {
            args.ipv4_only = false;
        }
    }
    if let (Some(socket), Some(fd)) = (last("socket"), last("fd")) {
        if socket > fd {
            // As in passt, -F's --one-off stays.
            args.fd = None;
            args.one_off = true;
        } else {
            args.socket = None;
        }
    }
}

/// passt's options made the program's: the arguments of the one serve path, and what passt
/// does differently toward its caller.
#[derive(Debug)]
pub struct Converted {
    pub args: cli::Args,
    /// Stay in the foreground (`-f`).
    pub foreground: bool,
    /// Log here instead of syslog or standard error (`-l`).
    pub log_file: Option<PathBuf>,
    /// The log file's limit (`--log-size`).
    pub log_size: u64,
    pub level: log::LevelFilter,
    /// The connected socket to serve (`-F`).
    pub fd: Option<i32>,
    /// vhost-user rather than the stream framing (`--vhost-user`).
    pub vhost_user: bool,
    /// `--dns-host`, the last per family.
    pub dns_hosts: Vec<IpAddr>,
    /// Said once logging is set up.
    pub warnings: Vec<String>,
}

/// The program's options in its errors, and passt's for them.
const SPELLING: &[(&str, &str)] = &[
    ("--socket-path", "--socket"),
    ("--stream", "--socket"),
    ("--pid-file", "--pid"),
];

/// A configuration error: one line, exit status 1.
fn refuse(opt: &str, value: Option<&str>, why: &str) -> String {
    match value {
        Some(v) => format!("{opt} {v}: {why}"),
        None => format!("{opt}: {why}"),
    }
}

/// Refuses an option this backend does not implement.
fn unsupported(opt: &str, value: Option<&str>, why: &str) -> String {
    refuse(
        opt,
        value,
        &format!("not supported by this backend ({why})"),
    )
}

/// Turns passt's options into the program's; the `Err` is the one line to print.
pub fn convert(p: &PasstArgs) -> Result<Converted, String> {
    if let Some(x) = p.extra.first() {
        return Err(format!("Extra non-option argument: {x}"));
    }
    check_pasta_only(p)?;
    check_unsupported(p)?;
    let mut warnings = Vec::new();
    if p.stderr {
        warnings.push("--stderr has no effect (as in passt)".to_string());
    }
    if let Some(path) = &p.repair_path {
        warnings.push(format!(
            "--repair-path {path}: migration is not supported, so there is no repair socket"
        ));
    }

    let mut args = cli::Args::try_parse_from(["vhost-net-user"]).map_err(|e| one_line(&e))?;
    let absolute = |opt: &str, path: &Path| {
        std::path::absolute(path)
            .map_err(|e| refuse(opt, Some(&path.display().to_string()), &e.to_string()))
    };
    if p.fd.is_none() {
        let socket = match &p.socket {
            Some(path) => absolute("--socket", path)?,
            None => free_default_socket(Path::new("/tmp"))?,
        };
        if p.vhost_user {
            args.socket_path = Some(socket);
        } else {
            args.stream = Some(socket);
        }
    }
    args.one_off = p.one_off || p.fd.is_some();
    args.pid_file = p.pid.as_deref().map(|f| absolute("--pid", f)).transpose()?;
    args.pcap = p
        .pcap
        .as_deref()
        .map(|f| absolute("--pcap", f))
        .transpose()?;
    args.runas = p.runas.clone();
    let log_file = p
        .log_file
        .as_deref()
        .map(|f| absolute("--log-file", f))
        .transpose()?;

    let policy = &mut args.policy;
    policy.address = p.address.clone();
    policy.netmask = p.netmask.clone();
    policy.gateway = p.gateway.clone();
    policy.mac_addr = p.mac_addr.clone();
    policy.dns = p.dns.clone();
    policy.search = if p.no_dhcp_search {
        vec!["none".into()]
    } else {
        p.search.clone()
    };
    policy.mtu = p.mtu.clone();
    policy.hostname = p.hostname.clone();
    policy.tcp_ports = p.tcp_ports.clone();
    policy.udp_ports = p.udp_ports.clone();
    policy.no_map_gw = p.no_map_gw;
    policy.ipv4_only = p.ipv4_only;
    policy.ipv6_only = p.ipv6_only;
    policy.no_dhcp = p.no_dhcp;
    policy.no_dhcpv6 = p.no_dhcpv6;
    policy.no_ndp = p.no_ndp;
    policy.no_ra = p.no_ra;
    policy.no_tcp = p.no_tcp;
    policy.no_udp = p.no_udp;
    policy.no_icmp = p.no_icmp;
    apply_mappings(p, &mut args.policy)?;
    let dns_hosts = dns_hosts(p)?;

    let level = if p.trace {
        log::LevelFilter::Trace
    } else if p.debug {
        log::LevelFilter::Debug
    } else if p.quiet {
        log::LevelFilter::Warn
    } else {
        log::LevelFilter::Info
    };
    Ok(Converted {
        args,
        foreground: p.foreground,
        log_file,
        log_size: p.log_size.unwrap_or(logging::DEFAULT_LOG_SIZE),
        level,
        fd: p.fd,
        vhost_user: p.vhost_user,
        dns_hosts,
        warnings,
    })
}

/// pasta's options: refused in passt's words.
fn check_pasta_only(p: &PasstArgs) -> Result<(), String> {
    let given = [
        (!p.tcp_ns.is_empty(), "-T"),
        (!p.udp_ns.is_empty(), "-U"),
        (p.ns_ifname.is_some(), "-I"),
        (p.userns.is_some(), "--userns"),
        (p.netns.is_some(), "--netns"),
        (p.netns_only, "--netns-only"),
        (p.ns_mac_addr.is_some(), "--ns-mac-addr"),
        (p.no_netns_quit, "--no-netns-quit"),
        (p.config_net, "--config-net"),
        (p.no_copy_routes, "--no-copy-routes"),
        (p.no_copy_addrs, "--no-copy-addrs"),
        (p.host_lo_to_ns_lo, "--host-lo-to-ns-lo"),
        (p.dhcp_dns, "--dhcp-dns"),
        (p.dhcp_search, "--dhcp-search"),
        (p.splice_only, "--splice-only"),
    ];
    match given.into_iter().find(|(on, _)| *on) {
        Some((_, opt)) => Err(format!("{opt} is for pasta mode only")),
        None => Ok(()),
    }
}

/// passt options whose effect this backend does not have: each a one-line error.
fn check_unsupported(p: &PasstArgs) -> Result<(), String> {
    // `None`: not given; `Some(value)`: given, with its (first) value if it takes one.
    fn value(v: &Option<String>) -> Option<Option<&str>> {
        v.as_deref().map(Some)
    }
    fn first(v: &[String]) -> Option<Option<&str>> {
        v.first().map(|x| Some(x.as_str()))
    }
    let flag = |on: bool| on.then_some(None);
    let no_bind = "outbound sockets are not bound to an interface";
    let no_migration = "migration is not supported";
    let checks = [
        (
            value(&p.interface),
            "-i/--interface",
            "the guest's addresses never come from a host interface",
        ),
        (
            first(&p.outbound),
            "-o/--outbound",
            "outbound sockets are not bound to a source address",
        ),
        (value(&p.outbound_if4), "--outbound-if4", no_bind),
        (value(&p.outbound_if6), "--outbound-if6", no_bind),
        (
            value(&p.fqdn),
            "--fqdn",
            "no client FQDN is sent: DHCP option 81, DHCPv6 option 39",
        ),
        (
            flag(p.no_dhcp_dns),
            "--no-dhcp-dns",
            "the DNS address is always offered",
        ),
        (
            flag(p.freebind),
            "--freebind",
            "forwarded ports bind only to addresses the host has",
        ),
        (flag(p.migrate_exit), "--migrate-exit", no_migration),
        (
            flag(p.migrate_no_linger),
            "--migrate-no-linger",
            no_migration,
        ),
        (value(&p.stats), "--stats", "no statistics display"),
        (
            value(&p.conf_path),
            "-c/--conf-path",
            "no configuration socket",
        ),
        (
            flag(p.chroot_fallback),
            "--chroot-fallback",
            "the process confines itself without chroot",
        ),
    ];
    match checks
        .into_iter()
        .find_map(|(given, opt, why)| Some((given?, opt, why)))
    {
        Some((value, opt, why)) => Err(unsupported(opt, value, why)),
        None => Ok(()),
    }
}

/// `--map-host-loopback`, `--map-guest-addr` and `--dns-forward`: the engine maps the gateway
/// to the host's loopback (or nothing), maps no address to the guest's, and relays DNS at the
/// DNS address; passt's options are accepted where they ask for that, refused otherwise.
fn apply_mappings(p: &PasstArgs, policy: &mut crate::args::PolicyArgs) -> Result<(), String> {
    for addr in &p.map_guest_addr {
        if addr != "none" {
            return Err(unsupported(
                "--map-guest-addr",
                Some(addr),
                "no address is translated to the guest's",
            ));
        }
    }
    let explicit: Vec<&String> = p
        .map_host_loopback
        .iter()
        .filter(|a| *a != "none")
        .collect();
    if p.map_host_loopback.last().is_some_and(|a| a == "none") {
        policy.no_map_gw = true;
    }
    if explicit.is_empty() && p.dns_forward.is_empty() {
        return Ok(());
    }
    // What the guest is given decides what the options may name.
    let plan = policy.build().map_err(|e| e.to_string())?.plan;
    let gateway = |ip: IpAddr| match ip {
        IpAddr::V4(_) => plan.ipv4.as_ref().map(|v4| IpAddr::V4(v4.gateway)),
        IpAddr::V6(_) => plan.ipv6.as_ref().map(|v6| IpAddr::V6(v6.gateway)),
    };
    let dns = |ip: IpAddr| match ip {
        IpAddr::V4(_) => plan.ipv4.as_ref().map(|v4| IpAddr::V4(v4.dns)),
        IpAddr::V6(_) => plan.ipv6.as_ref().map(|v6| IpAddr::V6(v6.dns)),
    };
    let address = |opt: &str, a: &str| {
        a.parse::<IpAddr>()
            .map_err(|_| refuse(opt, Some(a), "not an IPv4 or IPv6 address"))
    };
    if let Some(last) = p.map_host_loopback.last().filter(|a| *a != "none") {
        for a in &explicit {
            let ip = address("--map-host-loopback", a)?;
            if gateway(ip) != Some(ip) {
                return Err(unsupported(
                    "--map-host-loopback",
                    Some(a),
                    "only the gateway address maps to the host's loopback",
                ));
            }
        }
        if p.no_map_gw {
            return Err(unsupported(
                "--map-host-loopback",
                Some(last),
                "with --no-map-gw: the gateway maps to the host for both families or neither",
            ));
        }
        policy.no_map_gw = false;
    }
    for a in &p.dns_forward {
        let ip = address("--dns-forward", a)?;
        if dns(ip) != Some(ip) {
            return Err(unsupported(
                "--dns-forward",
                Some(a),
                "DNS is relayed at the DNS address the guest is offered only (--dns sets it)",
            ));
        }
    }
    Ok(())
}

/// `--dns-host ADDR`: the last of each family.
fn dns_hosts(p: &PasstArgs) -> Result<Vec<IpAddr>, String> {
    let mut v4 = None;
    let mut v6 = None;
    for a in &p.dns_host {
        let ip: IpAddr = a
            .parse()
            .ok()
            .filter(|ip: &IpAddr| !ip.is_unspecified())
            .ok_or_else(|| refuse("--dns-host", Some(a), "not a host nameserver address"))?;
        match ip {
            IpAddr::V4(_) => v4 = Some(ip),
            IpAddr::V6(_) => v6 = Some(ip),
        }
    }
    Ok(v4.into_iter().chain(v6).collect())
}

/// passt's default socket: the first of `DIR/passt_1.socket` to `DIR/passt_64.socket` that
/// nothing is at, or where a socket is left that nobody accepts on (the program's listener
/// replaces a socket it finds at its path).
fn free_default_socket(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::FileTypeExt;
    for n in 1..=64 {
        let path = dir.join(format!("passt_{n}.socket"));
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
            Ok(meta) if meta.file_type().is_socket() => {
                if let Err(e) = UnixStream::connect(&path)
                    && e.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    return Ok(path);
                }
            }
            _ => {}
        }
    }
    Err(format!(
        "no free socket path from {} to {}: give one with --socket",
        dir.join("passt_1.socket").display(),
        dir.join("passt_64.socket").display()
    ))
}

/// Runs passt's command line, as [`parse`] returned it; returns the exit status (of the
/// parent, when it goes to the background).
pub fn run(p: PasstArgs) -> i32 {
    let conv = match convert(&p) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("passt: {e}");
            return USAGE_STATUS;
        }
    };
    let connected = match conv.fd {
        Some(fd) => match sys::stream_from_fd(fd) {
            Ok(stream) => Some(stream),
            Err(e) => {
                eprintln!("passt: --fd {fd}: {e}");
                return USAGE_STATUS;
            }
        },
        None => None,
    };
    let sink = match logging::open_sink(conv.log_file.as_deref(), conv.log_size, conv.foreground) {
        Ok(sink) => sink,
        Err(e) => {
            let path = conv.log_file.as_deref().unwrap_or(Path::new("")).display();
            eprintln!("passt: --log-file {path}: {e}");
            return USAGE_STATUS;
        }
    };
    let mut ready: Option<Box<dyn FnOnce()>> = None;
    if !conv.foreground {
        match go_to_background() {
            Ok(Background::Parent(status)) => return status,
            Ok(Background::Child(notify)) => ready = Some(notify),
            Err(e) => {
                eprintln!("passt: going to the background: {e}");
                return 1;
            }
        }
    }
    let level = conv.level;
    let warnings = conv.warnings;
    let persona = Persona {
        name: "passt",
        usage_status: Some(USAGE_STATUS),
        logger: Some(Box::new(move || {
            let no_syslog = matches!(sink, logging::Sink::Syslog(None));
            logging::install(sink, level);
            if no_syslog {
                log::debug!("no syslog at /dev/log: logs go nowhere once in the background");
            }
            for w in warnings {
                log::warn!("{w}");
            }
        })),
        connected,
        connected_stream: !conv.vhost_user,
        dns_hosts: conv.dns_hosts,
        ready,
        spelling: SPELLING,
    };
    cli::run_as(conv.args, persona)
}

/// Which side of going to the background this process is on.
enum Background {
    /// The caller's process: exit with this status.
    Parent(i32),
    /// The one that goes on: call this once serving.
    Child(Box<dyn FnOnce()>),
}

/// Forks; the parent waits for the child to be ready (see the module's comment).
fn go_to_background() -> std::io::Result<Background> {
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    let (mut reader, mut writer) = std::io::pipe()?;
    match sys::fork_single_threaded()? {
        sys::Forked::Parent(_) => {
            drop(writer);
            let mut byte = [0u8; 1];
            let status = loop {
                match reader.read(&mut byte) {
                    Ok(1) => break 0,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => break 1,
                }
            };
            Ok(Background::Parent(status))
        }
        sys::Forked::Child => {
            drop(reader);
            rustix::process::setsid()?;
            std::env::set_current_dir("/")?;
            logging::echo_to_stderr(true);
            // Its standard error is the caller's, which waits for that pipe's end.
            crate::exit::janitor_without_stderr();
            Ok(Background::Child(Box::new(move || {
                logging::echo_to_stderr(false);
                if let Err(e) = writer.write_all(b"1") {
                    log::warn!("telling the parent we are ready: {e}");
                }
                drop(writer);
                if let Err(e) = sys::redirect_stdio(std::os::fd::AsFd::as_fd(&devnull)) {
                    log::warn!("standard streams to /dev/null: {e}");
                }
            })))
        }
    }
}

mod logging;
#[cfg(test)]
mod tests;
