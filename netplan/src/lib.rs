//! The guest-visible network as one immutable [`NetPlan`].
//!
//! Every front end (QEMU `-netdev user` options, libvirt `<interface>` XML, passt options,
//! all in the `policy` crate) produces a `NetPlan`; the NAT core consumes it and never reads
//! configuration itself. That keeps "what the guest sees" a pure function of the inputs,
//! whichever link carries frames.
//!
//! The types live in a crate of their own, with no dependencies, so that the NAT core builds
//! none of the front ends' parsers (clap, roxmltree, serde).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// slirp's MAC for an emulated IPv4 host: 52:55 followed by the four address bytes.
    pub fn slirp_for_ipv4(addr: Ipv4Addr) -> Self {
        let o = addr.octets();
        MacAddr([0x52, 0x55, o[0], o[1], o[2], o[3]])
    }

    /// slirp's MAC for an emulated IPv6 host: 52:56 followed by the low 32 bits.
    pub fn slirp_for_ipv6(addr: Ipv6Addr) -> Self {
        let o = addr.octets();
        MacAddr([0x52, 0x56, o[12], o[13], o[14], o[15]])
    }

    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    /// Six hex bytes separated by `:` (or `-`), one or two digits each, as libvirt reads them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(format!("'{s}' is not a MAC address (six hex bytes)"));
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(&parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(format!("'{s}' is not a MAC address (six hex bytes)"));
            }
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("'{s}' is not a MAC address (six hex bytes)"))?;
        }
        Ok(MacAddr(m))
    }
}

impl std::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The IPv4 side of the plan: the subnet the guest lives in and the emulated hosts on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Plan {
    /// Network address (already masked).
    pub network: Ipv4Addr,
    /// Prefix length of `network`.
    pub prefix_len: u8,
    /// The gateway ("host" in slirp's terms): answers ARP and echo, routes everything.
    pub gateway: Ipv4Addr,
    /// The DNS relay address.
    pub dns: Ipv4Addr,
    /// First address of the DHCP pool.
    pub dhcp_start: Ipv4Addr,
}

impl Ipv4Plan {
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_to_mask(self.prefix_len))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = prefix_to_mask(self.prefix_len);
        u32::from(addr) & mask == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !prefix_to_mask(self.prefix_len))
    }
}

/// The IPv6 side of the plan (router advertisements, NDP, DHCPv6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Plan {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Ipv6Addr,
    pub dns: Ipv6Addr,
    /// An address handed to the guest as given (passt profile, DHCPv6 IA_NA). `None` (slirp):
    /// the guest autoconfigures from the advertised prefix and DHCPv6 is stateless.
    pub guest_addr: Option<Ipv6Addr>,
}

/// What the DHCPv4 server hands out beyond addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpPlan {
    /// Number of addresses in the pool starting at `Ipv4Plan::dhcp_start` (slirp: 16).
    pub pool_size: u8,
    /// Lease time in seconds (slirp: 86400).
    pub lease_secs: u32,
    /// Option 26; slirp never sends one.
    pub mtu_option: Option<u16>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 15.
    pub domain_name: Option<String>,
    /// Option 119, in order.
    pub search: Vec<String>,
    /// BOOTP `file` field.
    pub bootfile: Option<String>,
    /// Option 66.
    pub tftp_server_name: Option<String>,
}

/// The one immutable description of what the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPlan {
    pub ipv4: Option<Ipv4Plan>,
    pub ipv6: Option<Ipv6Plan>,
    /// The MAC the gateway (and every other emulated IPv4 host) uses toward the guest.
    pub gateway_mac: MacAddr,
    pub dhcp: DhcpPlan,
    /// Link MTU: the largest IP packet the backend sends to the guest.
    pub mtu: u16,
    /// `restrict=on`: no routing beyond the emulated hosts; DHCP omits router and DNS.
    pub restrict: bool,
    /// Connections to the gateway address go to the host's loopback (slirp's default).
    pub map_gateway_to_loopback: bool,
    /// Host ports forwarded into the guest, in the order given (hostfwd, `-t`/`-u`,
    /// `<portForward>`). Kept here so the plan is complete; netcore applies them.
    pub forwards: Vec<PortForward>,
    /// slirp's `tftp=`: the directory the TFTP server (port 69 on the gateway) serves.
    pub tftp_root: Option<PathBuf>,
    /// slirp's `guestfwd=…-cmd:…`, in the order given.
    pub guest_forwards: Vec<GuestForward>,
    /// slirp's `smb=`: a directory shared with the guest by Samba's smbd, which the backend
    /// starts for each guest connection to ports 139 and 445 of [`SmbShare::addr`] (two more
    /// guest forwards, added once the server's private directory exists).
    pub smb: Option<SmbShare>,
    /// Which services answer the guest (passt's `--no-dhcp`, `--no-tcp`, …).
    pub services: Services,
}

/// The services the backend offers the guest, each of which passt lets the user switch off
/// (`--no-dhcp`, `--no-dhcpv6`, `--no-ndp`, `--no-ra`, `--no-tcp`, `--no-udp`, `--no-icmp`).
/// A service that is off answers nothing: the guest's frames for it are dropped and counted
/// as unhandled, as passt drops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Services {
    /// The DHCPv4 server.
    pub dhcp: bool,
    /// The DHCPv6 server.
    pub dhcpv6: bool,
    /// Neighbour discovery: neighbour advertisements for the emulated addresses, and router
    /// advertisements while `ra` is on too.
    pub ndp: bool,
    /// Router advertisements, whether solicited or sent unprompted.
    pub ra: bool,
    /// Guest TCP, to anywhere (port forwards and guest forwards need it).
    pub tcp: bool,
    /// Guest UDP to the host and beyond, the DNS relay included. The emulated DHCP, DHCPv6 and
    /// TFTP servers are not NAT and answer regardless, as passt's DHCP does without its UDP.
    pub udp: bool,
    /// ICMP and ICMPv6 echo, to the emulated hosts and beyond.
    pub icmp: bool,
}

impl Services {
    /// Every service on: what slirp offers.
    pub const ALL: Services = Services {
        dhcp: true,
        dhcpv6: true,
        ndp: true,
        ra: true,
        tcp: true,
        udp: true,
        icmp: true,
    };

    /// Whether router advertisements go out: they are NDP messages, so `--no-ndp` stops them
    /// as well as `--no-ra`.
    pub fn router_advertisements(&self) -> bool {
        self.ndp && self.ra
    }

    /// The names of the services that are off (as in `--no-NAME`), in a fixed order.
    pub fn off(&self) -> Vec<&'static str> {
        [
            ("dhcp", self.dhcp),
            ("dhcpv6", self.dhcpv6),
            ("ndp", self.ndp),
            ("ra", self.ra),
            ("tcp", self.tcp),
            ("udp", self.udp),
            ("icmp", self.icmp),
        ]
        .into_iter()
        .filter_map(|(name, on)| (!on).then_some(name))
        .collect()
    }
}

impl Default for Services {
    fn default() -> Self {
        Services::ALL
    }
}

/// slirp's `guestfwd=[tcp]:[SERVER]:PORT-cmd:COMMAND`: each guest TCP connection to
/// SERVER:PORT (an address of the guest's IPv4 network that is neither the gateway nor the DNS
/// address) starts COMMAND, whose standard input, output and error are that connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestForward {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// The command as written, for `--explain` and logs.
    pub command: String,
    /// Its words, split as slirp splits them (GLib's `g_shell_parse_argv`: quotes and
    /// backslashes as in sh, no expansions); never empty.
    pub argv: Vec<String>,
}

/// slirp's `smb=DIR` with `smbserver=ADDR`: where the guest finds the share, and what it shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbShare {
    /// `smbserver=`, by default the host bits of 0.0.2.4 in the network, as guest forwards.
    pub addr: Ipv4Addr,
    /// `smb=`: the directory shared as `\\ADDR\qemu`.
    pub export: PathBuf,
}

impl SmbShare {
    /// The ports smbd answers at [`SmbShare::addr`]: NetBIOS session (139) and direct SMB
    /// (445), each a guest forward of its own in libslirp.
    pub const PORTS: [u16; 2] = [139, 445];
}

/// Transport protocol of a port forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Number of ports in the range (never zero: `first <= last`).
    pub fn count(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Whether two listening addresses can collide (`None` and unspecified addresses cover their
/// family, or both families): startup's forwards are checked against each other with it, and
/// those added at run time against the rest.
pub fn addrs_meet(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => {
            x == y || (x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified()))
        }
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Where a forward listens on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostListen {
    /// IP sockets. `addr: None` listens on every address of both families (passt without an
    /// address); QEMU's empty hostfwd address is `Some(0.0.0.0)`, IPv4 only, as in QEMU.
    /// `iface` binds to one host device (passt `%eth0`, libvirt `dev=`).
    Inet {
        addr: Option<IpAddr>,
        iface: Option<String>,
        ports: PortRange,
    },
    /// A unix stream socket whose connections become guest TCP connections
    /// (QEMU `hostfwd=unix:PATH-:PORT`).
    Unix { path: PathBuf },
}

/// A host port (range) forwarded into the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub proto: Proto,
    pub host: HostListen,
    /// `None`: the guest's own address: for IPv4 `Ipv4Plan::dhcp_start` (fixed at setup, as
    /// slirp does), for IPv6 the address the guest is seen using.
    pub guest_addr: Option<IpAddr>,
    /// The guest port for the first host port; further ports keep their offset.
    pub guest_port: u16,
    /// Leave out the host's ephemeral ports (`ip_local_port_range`): passt's `all` and
    /// exclusion-only specs, and a libvirt `<portForward>` without ranges.
    pub skip_ephemeral: bool,
}

impl PortForward {
    /// What `self` and `other` would both take on the host, or `None` when they can coexist:
    /// the same protocol and host port on meeting addresses ([`addrs_meet`]), or the same
    /// unix path. Startup's forwards are checked against each other with it, and those added
    /// at run time against the rest; the text names what both want (`tcp port 80`, `the
    /// socket PATH`).
    pub fn clash(&self, other: &PortForward) -> Option<String> {
        if self.proto != other.proto {
            return None;
        }
        match (&self.host, &other.host) {
            (
                HostListen::Inet {
                    addr: a1,
                    ports: p1,
                    ..
                },
                HostListen::Inet {
                    addr: a2,
                    ports: p2,
                    ..
                },
            ) => (addrs_meet(*a1, *a2) && p1.overlaps(p2))
                .then(|| format!("{} port {}", self.proto, p1.first.max(p2.first))),
            (HostListen::Unix { path: a }, HostListen::Unix { path: b }) => {
                (a == b).then(|| format!("the socket {}", a.display()))
            }
            _ => None,
        }
    }
}

impl NetPlan {
    /// QEMU slirp's defaults: 10.0.2.0/24, gateway .2, DNS .3, DHCP from .15;
    /// IPv6 fec0::/64 with ::2 and ::3.
    pub fn slirp_default() -> Self {
        let ipv4 = Ipv4Plan {
            network: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            dhcp_start: Ipv4Addr::new(10, 0, 2, 15),
        };
        let prefix = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0);
        NetPlan {
            gateway_mac: MacAddr::slirp_for_ipv4(ipv4.gateway),
            ipv4: Some(ipv4),
            ipv6: Some(Ipv6Plan {
                prefix,
                prefix_len: 64,
                gateway: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2),
                dns: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3),
                guest_addr: None,
            }),
            dhcp: DhcpPlan {
                pool_size: 16,
                lease_secs: 86400,
                mtu_option: None,
                hostname: None,
                domain_name: None,
                search: Vec::new(),
                bootfile: None,
                tftp_server_name: None,
            },
            mtu: 1500,
            restrict: false,
            map_gateway_to_loopback: true,
            forwards: Vec::new(),
            tftp_root: None,
            guest_forwards: Vec::new(),
            smb: None,
            services: Services::ALL,
        }
    }
}

impl Default for NetPlan {
    fn default() -> Self {
        Self::slirp_default()
    }
}

/// The netmask of a prefix length, as a host-order integer.
pub fn prefix_to_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n if n >= 32 => u32::MAX,
        n => u32::MAX << (32 - u32::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slirp_default_matches_qemu() {
        let plan = NetPlan::slirp_default();
        let v4 = plan.ipv4.as_ref().unwrap();
        assert_eq!(v4.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(v4.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(v4.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(v4.dhcp_start, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(plan.gateway_mac.to_string(), "52:55:0a:00:02:02");
        assert_eq!(plan.dhcp.lease_secs, 86400);
        assert_eq!(plan.dhcp.mtu_option, None);
        assert_eq!(plan.ipv6.as_ref().unwrap().gateway.to_string(), "fec0::2");
        assert_eq!(plan.services, Services::ALL);
        assert!(plan.services.off().is_empty());
    }

    #[test]
    fn router_advertisements_need_ndp_and_ra() {
        let with = |ndp, ra| Services {
            ndp,
            ra,
            ..Services::ALL
        };
        assert!(with(true, true).router_advertisements());
        assert!(!with(true, false).router_advertisements());
        assert!(!with(false, true).router_advertisements());
        let off = Services {
            dhcp: false,
            icmp: false,
            ..with(false, false)
        };
        assert_eq!(off.off(), ["dhcp", "ndp", "ra", "icmp"]);
    }

    #[test]
    fn mac_derivations() {
        assert_eq!(
            MacAddr::slirp_for_ipv4(Ipv4Addr::new(169, 254, 2, 2)).to_string(),
            "52:55:a9:fe:02:02"
        );
        assert_eq!(
            MacAddr::slirp_for_ipv6("fe80::2".parse().unwrap()).to_string(),
            "52:56:00:00:00:02"
        );
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_to_mask(0), 0);
        assert_eq!(prefix_to_mask(16), 0xffff_0000);
        assert_eq!(prefix_to_mask(32), u32::MAX);
        let v4 = NetPlan::slirp_default().ipv4.unwrap();
        assert!(v4.contains(Ipv4Addr::new(10, 0, 2, 200)));
        assert!(!v4.contains(Ipv4Addr::new(10, 0, 3, 1)));
        assert_eq!(v4.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
    }
}
