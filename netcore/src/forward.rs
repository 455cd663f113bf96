//! Port forwarding: host sockets on the plan's forwarded ports, whose connections and datagrams
//! go to the guest (QEMU `hostfwd=`, passt `-t`/`-u`, libvirt `<portForward>`).
//!
//! The plan's sockets are opened when the program starts: a port that cannot be bound is a
//! startup error, as with QEMU and passt, and the ports stay bound while frontends come and
//! go. Runtime control ([`crate::control`]) opens and closes more while the program runs,
//! through [`open_one`]. Each [`crate::Engine`] watches them while it serves a guest; a
//! connection that arrives in between waits in the listen backlog.
//!
//! What the guest sees follows slirp: a forwarded connection comes from the peer's own
//! address, or from the gateway when the peer is the host's loopback (`sotranslate_accept`).
//! A connection to a unix socket forward (QEMU's `hostfwd=unix:PATH-:PORT`) comes from the
//! gateway too, from a port of its own.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use netplan::{HostListen, NetPlan, PortForward, Proto};

use crate::sys;

/// Connections a forwarded TCP port may have waiting to be accepted.
const BACKLOG: libc::c_int = 128;

/// Where a forward's socket is bound on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Inet(SocketAddr),
    /// A unix stream socket at this path; its connections become guest TCP connections.
    Unix(PathBuf),
}

impl Local {
    /// Whether the forward takes IPv6 peers (and so prefers the guest's IPv6 address).
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Local::Inet(a) if a.is_ipv6())
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Local::Inet(a) => write!(f, "{a}"),
            Local::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who connected to or wrote to a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Inet(SocketAddr),
    /// A client of a unix socket forward, shown to the guest as the gateway at this port.
    Unix {
        port: u16,
    },
}

/// One bound host socket of a forward: a TCP listener or a UDP socket for one host port, or
/// a unix stream listener.
pub struct ForwardSocket {
    sock: OwnedFd,
    pub proto: Proto,
    /// Where it is bound.
    pub local: Local,
    /// The guest's side: `None` for the guest's own address.
    pub guest_addr: Option<IpAddr>,
    pub guest_port: u16,
    /// An IPv6 TCP listener that takes IPv4 peers too (as v4-mapped addresses): a forward
    /// without a host address needs one socket per port, not two, as passt's.
    pub dual_stack: bool,
}

/// What logs name a forwarded port by: `tcp 127.0.0.1:2222 -> 10.0.2.15:22`.
impl fmt::Display for ForwardSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> ", self.proto, self.local)?;
        match self.guest_addr {
            Some(a) => write!(f, "{}", SocketAddr::new(a, self.guest_port)),
            None => write!(f, "guest:{}", self.guest_port),
        }
    }
}

impl fmt::Debug for ForwardSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl AsFd for ForwardSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl ForwardSocket {
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// A descriptor of the same socket, for an engine's flow to own.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.sock.try_clone()
    }
}

/// Why the forwarded ports could not all be opened.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("port forward {proto} {addr}{}: cannot listen", iface.as_ref().map(|i| format!("%{i}")).unwrap_or_default())]
    Bind {
        proto: Proto,
        addr: SocketAddr,
        iface: Option<String>,
        source: io::Error,
    },
    #[error("port forward from unix:{}: cannot listen", path.display())]
    Unix { path: PathBuf, source: io::Error },
    #[error(
        "port forwards need {needed} sockets, more than the open-file limit of {limit} allows \
         (raise it with ulimit -n, or forward fewer ports)"
    )]
    TooMany { needed: usize, limit: usize },
}

/// Descriptors the process keeps besides its forwards' sockets before it can serve (its
/// listening socket, epoll, eventfds, timers, a pcap file).
const OWN_FDS: usize = 64;

/// How many sockets `plan`'s forwards open at most: one per host port and family, where a TCP
/// forward without a host address takes both families on one socket and a UDP one needs two.
/// Ports a forward leaves to the host (`ephemeral`, for passt's `all`) do not count.
fn sockets_needed(plan: &NetPlan, ephemeral: &RangeInclusive<u16>) -> usize {
    plan.forwards
        .iter()
        .map(|f| match &f.host {
            HostListen::Inet { addr, ports, .. } => {
                let skipped = if f.skip_ephemeral {
                    let first = ports.first.max(*ephemeral.start());
                    let last = ports.last.min(*ephemeral.end());
                    usize::from(last.saturating_sub(first)) + usize::from(first <= last)
                } else {
                    0
                };
                let families = if addr.is_none() && f.proto == Proto::Udp {
                    2
                } else {
                    1
                };
                (ports.count() as usize - skipped) * families
            }
            HostListen::Unix { .. } => 1,
        })
        .sum()
}

/// Opens a socket for every host port of every forward in `plan`, after raising the limit on
/// open files to what they need plus `other_fds`, room for the connections the program will
/// open (passt's `all` alone wants tens of thousands of sockets, and the usual soft limit is
/// 1024).
///
/// A TCP forward without a host address listens on one dual-stack socket; a UDP one on two,
/// the IPv6 socket for IPv6 only, because each becomes the flow of one guest socket of its
/// family. A host without IPv6 gets IPv4 sockets alone. Forwards that leave out the ephemeral
/// ports (passt's `all`) also pass over ports something else holds, as passt does.
pub fn open(plan: &NetPlan, other_fds: usize) -> Result<Vec<ForwardSocket>, ForwardError> {
    let ephemeral = ephemeral_ports();
    let needed = sockets_needed(plan, &ephemeral);
    check_fd_limit(needed, other_fds)?;
    let mut sockets = Vec::new();
    for f in &plan.forwards {
        sockets.extend(open_forward(f, &ephemeral, needed)?);
    }
    Ok(sockets)
}

/// Opens the sockets of each forward of `plan` as [`open`] does, kept together by forward:
/// what runtime control lists and removes as one rule.
pub fn open_rules(
    plan: &NetPlan,
    other_fds: usize,
) -> Result<Vec<(PortForward, Vec<ForwardSocket>)>, ForwardError> {
    let ephemeral = ephemeral_ports();
    let needed = sockets_needed(plan, &ephemeral);
    check_fd_limit(needed, other_fds)?;
    plan.forwards
        .iter()
        .map(|f| Ok((f.clone(), open_forward(f, &ephemeral, needed)?)))
        .collect()
}

/// Opens the sockets of one forward added while the program runs (runtime control): the
/// same sockets a forward given at startup gets.
pub fn open_one(f: &PortForward) -> Result<Vec<ForwardSocket>, ForwardError> {
    open_forward(f, &ephemeral_ports(), 1)
}

/// Raises the open-file limit for `needed` forward sockets and `other_fds` more.
fn check_fd_limit(needed: usize, other_fds: usize) -> Result<(), ForwardError> {
    let limit = sys::raise_fd_limit(needed + OWN_FDS + other_fds).unwrap_or(0);
    if needed > 0 {
        if limit < needed + OWN_FDS {
            return Err(ForwardError::TooMany { needed, limit });
        }
        if limit < needed + OWN_FDS + other_fds {
            log::warn!(
                "the open-file limit of {limit} leaves {} descriptors for connections beside \
                 the {needed} forwarded ports",
                limit - needed - OWN_FDS
            );
        }
    }
    Ok(())
}

/// The sockets of forward `f`; `needed` is what the error for a lack of descriptors names.
fn open_forward(
    f: &PortForward,
    ephemeral: &RangeInclusive<u16>,
    needed: usize,
) -> Result<Vec<ForwardSocket>, ForwardError> {
    let mut sockets = Vec::new();
    let (addr, iface, ports) = match &f.host {
        HostListen::Inet { addr, iface, ports } => (addr, iface.as_deref(), ports),
        HostListen::Unix { path } => {
            sockets.push(ForwardSocket {
                sock: bind_unix(path).map_err(|source| ForwardError::Unix {
                    path: path.clone(),
                    source,
                })?,
                proto: Proto::Tcp,
                local: Local::Unix(path.clone()),
                guest_addr: f.guest_addr,
                guest_port: f.guest_port,
                dual_stack: false,
            });
            return Ok(sockets);
        }
    };
    for port in ports.first..=ports.last {
        if f.skip_ephemeral && ephemeral.contains(&port) {
            continue;
        }
        let Some(guest_port) = guest_port(f, ports.first, port) else {
            break;
        };
        // Binds one socket; `Ok(false)` when IPv6 was asked of a host without it.
        let mut listen = |ip: IpAddr, family: Family| -> Result<bool, ForwardError> {
            let local = SocketAddr::new(ip, port);
            match bind(f.proto, local, iface, family) {
                Ok(sock) => {
                    sockets.push(ForwardSocket {
                        sock,
                        proto: f.proto,
                        local: Local::Inet(local),
                        guest_addr: f.guest_addr,
                        guest_port,
                        dual_stack: family == Family::Both,
                    });
                    Ok(true)
                }
                Err(e) if family != Family::Given && no_ipv6(&e) && ip.is_ipv6() => {
                    log::debug!("no IPv6 on this host: {} {local} not forwarded", f.proto);
                    Ok(false)
                }
                Err(e) if f.skip_ephemeral && in_use(&e) => {
                    log::debug!("{} {local} is taken: not forwarded", f.proto);
                    Ok(true)
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    let limit = sys::raise_fd_limit(0).unwrap_or(0);
                    Err(ForwardError::TooMany { needed, limit })
                }
                Err(source) => Err(ForwardError::Bind {
                    proto: f.proto,
                    addr: local,
                    iface: iface.map(str::to_owned),
                    source,
                }),
            }
        };
        let v4_any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let v6_any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        match (addr, f.proto) {
            (Some(ip), _) => {
                listen(*ip, Family::Given)?;
            }
            // Without IPv6, the IPv4 socket alone.
            (None, Proto::Tcp) => {
                if !listen(v6_any, Family::Both)? {
                    listen(v4_any, Family::Given)?;
                }
            }
            (None, Proto::Udp) => {
                listen(v4_any, Family::Given)?;
                listen(v6_any, Family::V6Only)?;
            }
        }
    }
    Ok(sockets)
}

/// Which peers a forward's socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Those of its address's family (the system's default for an IPv6 socket).
    Given,
    /// IPv6 alone, beside an IPv4 socket on the same port.
    V6Only,
    /// An IPv6 socket that takes IPv4 peers too.
    Both,
}

/// The guest port for host port `port` of a range starting at `first`; `None` past 65535.
fn guest_port(f: &PortForward, first: u16, port: u16) -> Option<u16> {
    u16::try_from(u32::from(f.guest_port) + u32::from(port - first)).ok()
}

fn bind(
    proto: Proto,
    local: SocketAddr,
    iface: Option<&str>,
    family: Family,
) -> io::Result<OwnedFd> {
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let sock = sys::socket(sys::family(&local.ip()), ty, 0)?;
    let fd = sock.as_fd();
    sys::set_reuse_addr(fd)?;
    match family {
        Family::Given => {}
        Family::V6Only => sys::set_v6_only(fd, true)?,
        Family::Both => sys::set_v6_only(fd, false)?,
    }
    if let Some(name) = iface {
        sys::bind_to_device(fd, name)?;
    }
    sys::bind(fd, &local)?;
    if proto == Proto::Tcp {
        sys::listen(fd, BACKLOG)?;
    }
    Ok(sock)
}

/// A non-blocking unix stream listener at `path`; an existing file there is left alone (an
/// error), as for the backend's own socket.
fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(OwnedFd::from(listener))
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn in_use(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EACCES))
}

/// The host's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default if
/// unreadable.
fn ephemeral_ports() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(32768..=60999)
}

fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut words = text.split_whitespace();
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    Some(first..=last)
}

/// Where a forwarded connection or datagram from `peer` lands in the guest, and the address
/// it comes from there: `None` when the guest has no address of a family the forward can use.
pub fn guest_side(
    fwd: &ForwardSocket,
    plan: &NetPlan,
    upstream: &crate::nat::Upstream,
    guest_ipv6: Option<Ipv6Addr>,
    peer: Peer,
) -> Option<(SocketAddr, SocketAddr)> {
    let own = |v6: bool| -> Option<IpAddr> {
        if v6 {
            plan.ipv6.as_ref().and(guest_ipv6).map(IpAddr::V6)
        } else {
            plan.ipv4.as_ref().map(|v4| IpAddr::V4(v4.dhcp_start))
        }
    };
    // A dual-stack listener prefers the guest's address of the peer's family, as a socket of
    // that family alone would.
    let v6 = match peer {
        Peer::Inet(peer) if fwd.dual_stack => peer.ip().to_canonical().is_ipv6(),
        _ => fwd.local.is_ipv6(),
    };
    let guest_ip = fwd.guest_addr.or_else(|| own(v6)).or_else(|| own(!v6))?;
    let gateway = match guest_ip {
        IpAddr::V4(_) => IpAddr::V4(plan.ipv4.as_ref()?.gateway),
        IpAddr::V6(_) => IpAddr::V6(plan.ipv6.as_ref()?.gateway),
    };
    let from = match peer {
        Peer::Inet(peer) => {
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let from = crate::nat::inbound_source(plan, upstream, peer);
            if from.is_ipv6() == guest_ip.is_ipv6() {
                from
            } else {
                // A peer of the other family: it comes from the gateway of the guest's.
                SocketAddr::new(gateway, peer.port())
            }
        }
        Peer::Unix { port } => SocketAddr::new(gateway, port),
    };
    Some((SocketAddr::new(guest_ip, fwd.guest_port), from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netplan::PortRange;

    fn forward(proto: Proto, addr: Option<IpAddr>, ports: PortRange, guest: u16) -> PortForward {
        PortForward {
            proto,
            host: HostListen::Inet {
                addr,
                iface: None,
                ports,
            },
            guest_addr: None,
            guest_port: guest,
            skip_ephemeral: false,
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_range_gets_one_socket_per_port_with_the_guest_ports_offset_alike() {
        let first = free_port();
        let mut plan = NetPlan::slirp_default();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let range = PortRange {
            first,
            last: first + 1,
        };
        plan.forwards = vec![forward(Proto::Tcp, lo, range, 2000)];
        let Ok(sockets) = open(&plan, 0) else {
            return; // the neighbouring port was taken meanwhile: nothing to learn
        };
        let seen: Vec<(Local, u16)> = sockets
            .iter()
            .map(|s| (s.local.clone(), s.guest_port))
            .collect();
        let at = |port| Local::Inet(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(seen, [(at(first), 2000), (at(first + 1), 2001)]);
        std::net::TcpStream::connect(("127.0.0.1", first + 1)).expect("listening");
    }

    #[test]
    fn a_taken_port_names_itself_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut plan = NetPlan::slirp_default();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        plan.forwards = vec![forward(Proto::Tcp, lo, PortRange::single(port), 22)];
        let err = open(&plan, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("port forward tcp 127.0.0.1:{port}: cannot listen")
        );
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(
            source,
            Some(io::Error::from_raw_os_error(libc::EADDRINUSE).to_string())
        );
        // UDP is a separate port space: the same number is free there.
        plan.forwards = vec![forward(Proto::Udp, lo, PortRange::single(port), 22)];
        if let Ok(sockets) = open(&plan, 0) {
            assert_eq!(sockets.len(), 1);
        }
    }

    #[test]
    fn a_unix_forward_listens_at_its_path_and_a_taken_path_is_named() {
        let dir = std::env::temp_dir().join(format!("vnu-fwd-unix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fwd.sock");
        let mut plan = NetPlan::slirp_default();
        plan.forwards = vec![PortForward {
            proto: Proto::Tcp,
            host: HostListen::Unix { path: path.clone() },
            guest_addr: None,
            guest_port: 22,
            skip_ephemeral: false,
        }];
        let sockets = open(&plan, 0).unwrap();
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].local, Local::Unix(path.clone()));
        std::os::unix::net::UnixStream::connect(&path).expect("listening");
        // The path is taken now (by the socket above): a second backend is refused.
        let err = open(&plan, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("port forward from unix:{}: cannot listen", path.display())
        );
        drop(sockets);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_addressless_tcp_forward_takes_both_families_on_one_socket_and_udp_needs_two() {
        let port = free_port();
        let all = |proto| {
            let mut plan = NetPlan::slirp_default();
            plan.forwards = vec![forward(proto, None, PortRange::single(port), 22)];
            plan
        };
        let Ok(tcp) = open(&all(Proto::Tcp), 0) else {
            return; // taken on another address meanwhile: nothing to learn
        };
        let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        let local = |s: &ForwardSocket| (s.local.to_string(), s.dual_stack);
        if ipv6 {
            assert_eq!(
                tcp.iter().map(local).collect::<Vec<_>>(),
                [(format!("[::]:{port}"), true)]
            );
            std::net::TcpStream::connect(("::1", port)).expect("IPv6 peers");
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("IPv4 peers");
        drop(tcp);
        if let Ok(udp) = open(&all(Proto::Udp), 0) {
            let want: &[(String, bool)] = &[
                (format!("0.0.0.0:{port}"), false),
                (format!("[::]:{port}"), false),
            ];
            assert_eq!(
                udp.iter().map(local).collect::<Vec<_>>(),
                want[..if ipv6 { 2 } else { 1 }]
            );
        }
    }

    #[test]
    fn the_sockets_needed_leave_out_the_ephemeral_ports_of_all() {
        let ephemeral = ephemeral_ports();
        let outside = 65535 - (ephemeral.end() - ephemeral.start() + 1) as usize;
        let every = PortRange {
            first: 1,
            last: 65535,
        };
        let mut plan = NetPlan::slirp_default();
        let all = |proto| PortForward {
            skip_ephemeral: true,
            ..forward(proto, None, every, 1)
        };
        plan.forwards = vec![all(Proto::Tcp), all(Proto::Udp)];
        assert_eq!(sockets_needed(&plan, &ephemeral), outside * 3);
        // A range that names the ephemeral ports itself gets them; one host address, one
        // socket a port.
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        plan.forwards = vec![forward(Proto::Udp, lo, every, 1)];
        assert_eq!(sockets_needed(&plan, &ephemeral), 65535);
    }

    #[test]
    fn the_ephemeral_range_is_read_as_two_numbers() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("32768"), None);
    }

    fn socket_for(local: &str, guest_addr: Option<IpAddr>) -> ForwardSocket {
        let local: SocketAddr = local.parse().unwrap();
        ForwardSocket {
            sock: sys::socket(sys::family(&local.ip()), libc::SOCK_DGRAM, 0).unwrap(),
            proto: Proto::Tcp,
            local: Local::Inet(local),
            guest_addr,
            guest_port: 22,
            dual_stack: false,
        }
    }

    #[test]
    fn the_guest_sees_loopback_peers_as_the_gateway_and_others_as_themselves() {
        let plan = NetPlan::slirp_default();
        let up = crate::nat::Upstream::default();
        let fwd = socket_for("0.0.0.0:2222", None);
        let side = |peer: &str, v6| {
            guest_side(&fwd, &plan, &up, v6, Peer::Inet(peer.parse().unwrap()))
                .map(|(g, f)| (g.to_string(), f.to_string()))
        };
        let own = |g: &str, f: &str| Some((g.to_string(), f.to_string()));
        assert_eq!(
            side("127.0.0.1:40000", None),
            own("10.0.2.15:22", "10.0.2.2:40000")
        );
        assert_eq!(
            side("192.0.2.7:40000", None),
            own("10.0.2.15:22", "192.0.2.7:40000")
        );
        // An IPv6 listener: the guest's IPv6 address once known, its IPv4 one before.
        let fwd = socket_for("[::]:2222", None);
        let side = |peer: &str, v6| {
            guest_side(&fwd, &plan, &up, v6, Peer::Inet(peer.parse().unwrap()))
                .map(|(g, f)| (g.to_string(), f.to_string()))
        };
        let guest6 = Some("fec0::5054:ff:fe12:3456".parse().unwrap());
        assert_eq!(
            side("[::1]:40000", guest6),
            own("[fec0::5054:ff:fe12:3456]:22", "[fec0::2]:40000")
        );
        assert_eq!(
            side("[::1]:40000", None),
            own("10.0.2.15:22", "10.0.2.2:40000")
        );
        // A dual-stack listener: the guest's address of the peer's family.
        let mut fwd = socket_for("[::]:2222", None);
        fwd.dual_stack = true;
        let side = |peer: &str, v6| {
            guest_side(&fwd, &plan, &up, v6, Peer::Inet(peer.parse().unwrap()))
                .map(|(g, f)| (g.to_string(), f.to_string()))
        };
        assert_eq!(
            side("[::ffff:127.0.0.1]:40000", guest6),
            own("10.0.2.15:22", "10.0.2.2:40000")
        );
        assert_eq!(
            side("[::1]:40000", guest6),
            own("[fec0::5054:ff:fe12:3456]:22", "[fec0::2]:40000")
        );
        // A client of a unix socket forward: the gateway, at the port it was given.
        let fwd = socket_for("0.0.0.0:0", None);
        assert_eq!(
            guest_side(&fwd, &plan, &up, None, Peer::Unix { port: 49152 })
                .map(|(g, f)| (g.to_string(), f.to_string())),
            own("10.0.2.15:22", "10.0.2.2:49152")
        );
        // A forward to a set guest address; no address at all of any family: nowhere.
        let lo = Peer::Inet("127.0.0.1:1".parse().unwrap());
        let fwd = socket_for("0.0.0.0:2222", Some("10.0.2.20".parse().unwrap()));
        assert_eq!(
            guest_side(&fwd, &plan, &up, None, lo).map(|(g, _)| g.to_string()),
            Some("10.0.2.20:22".to_string())
        );
        let mut v6_only = plan.clone();
        v6_only.ipv4 = None;
        let fwd = socket_for("0.0.0.0:2222", None);
        assert_eq!(guest_side(&fwd, &v6_only, &up, None, lo), None);
    }
}
