//! Warnings: a configuration that is legal but probably not what the user meant.
//!
//! The daemon logs each one and `--explain` lists them; both print [`Display`], one sentence
//! that quotes the user's own words (`at`, `origin`: the element, option or `-netdev user`
//! setting as written). Keeping them as data rather than text lets a caller tell them apart
//! without matching on wording.
//!
//! [`Display`]: std::fmt::Display

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// One legal but surprising thing about the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    // ----- read by a front end
    /// A command-line option replaced a different value of the configuration.
    Overrides {
        by: String,
        replaced: String,
        new: String,
        old: String,
    },
    /// `--search` replaced the configuration's search list.
    SearchOverrides { old: Vec<String> },
    /// libvirt `<backend fqdn=…>`: there is no DHCP option 81 to carry it.
    FqdnNotSent { at: String },
    /// libvirt `<link state='down'/>`.
    LinkStateIgnored { at: String },
    /// A libvirt element nothing here reads.
    NoEffect { at: String, element: String },
    /// libvirt `<backend type='passt'/>` does not pick the profile.
    PasstBackend { at: String },
    /// `ipv6-prefixlen=0`, which QEMU reads as 64.
    Ipv6PrefixLenZero { at: String },
    /// `smbserver=` without `smb=`.
    SmbServerAlone { at: String },

    // ----- derived by a profile
    /// An IPv4 address without a prefix: the address class gives the mask.
    ClassfulMask {
        at: String,
        addr: Ipv4Addr,
        prefix: u8,
        /// passt's rule (`true`) or QEMU's.
        passt: bool,
    },
    /// slirp profile: the address given is the network's own, and the guest gets another.
    NetworkAddress { addr: Ipv4Addr, guest: Ipv4Addr },
    /// slirp profile: the address given names its network, and the guest gets another.
    AddressIsNetwork {
        addr: Ipv4Addr,
        network: String,
        guest: Ipv4Addr,
    },
    /// A network (`net=`, `ipv6-prefix=`) written with host bits.
    HostBitsSet {
        at: String,
        /// "network" or "prefix".
        what: &'static str,
        network: String,
    },
    /// slirp profile: the 16 leases run past the broadcast address.
    PoolPastBroadcast {
        first: Ipv4Addr,
        last: Ipv4Addr,
        broadcast: Ipv4Addr,
        network: String,
    },
    /// slirp profile: the gateway or DNS address lies in the pool of leases.
    PoolIncludes {
        first: Ipv4Addr,
        last: Ipv4Addr,
        what: &'static str,
        addr: Ipv4Addr,
    },
    /// slirp profile: an IPv6 address is read as its prefix.
    Ipv6AddressIsPrefix {
        addr: Ipv6Addr,
        prefix: String,
        gateway: Ipv6Addr,
    },
    /// The IPv6 DNS address is the gateway's.
    Ipv6DnsIsGateway { dns: Ipv6Addr },
    /// passt profile: the DHCPv6 server is stateless, so the address given is not leased.
    Ipv6AddressNotLeased { addr: Ipv6Addr, prefix: String },
    /// `tftp=` names no directory.
    TftpRootNotDir { root: PathBuf },
    /// `bootfile=` names no file of the TFTP root.
    BootFileMissing { bootfile: String, root: PathBuf },
    /// `bootfile=` without `tftp=`.
    BootFileWithoutTftp { bootfile: String },
    /// A forward to a guest address the DHCP server does not hand out.
    ForwardOutsidePool {
        origin: String,
        addr: Ipv4Addr,
        first: Ipv4Addr,
        last: Ipv4Addr,
    },
    /// Forwards that listen on every host address (each quoted once).
    ForwardsOpen { origins: Vec<String> },
    /// A guest forward or the smb share on an address some guest may be leased.
    ExecInPool {
        origin: String,
        addr: Ipv4Addr,
        first: Ipv4Addr,
        last: Ipv4Addr,
        /// "this guest forward", "the smb share".
        this: &'static str,
    },
    /// `--no-udp` with DHCP on: the DNS address offered cannot answer.
    DnsWithoutUdp { dns: Ipv4Addr },
    /// An MTU below IPv6's minimum while IPv6 is on.
    MtuBelowIpv6 { mtu: u16 },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Warning::*;
        match self {
            Overrides {
                by,
                replaced,
                new,
                old,
            } => write!(f, "{by} overrides {replaced} ({new} instead of {old})"),
            SearchOverrides { old } => write!(
                f,
                "--search overrides the search list [{}] from the configuration",
                old.join(" ")
            ),
            FqdnNotSent { at } => {
                write!(f, "{at}: fqdn is not sent to the guest (no DHCP option 81)")
            }
            LinkStateIgnored { at } => write!(
                f,
                "{at}: the link state is QEMU's business; vhost-net-user serves the guest regardless"
            ),
            NoEffect { at, element } => {
                write!(f, "{at}: <{element}> has no effect on vhost-net-user")
            }
            PasstBackend { at } => write!(
                f,
                "{at}: <backend type='passt'/> only says which program carries the frames; \
                 --profile decides what the guest sees"
            ),
            Ipv6PrefixLenZero { at } => write!(
                f,
                "{at}: QEMU reads an IPv6 prefix length of 0 as the default 64"
            ),
            SmbServerAlone { at } => {
                write!(f, "{at}: does nothing without smb= (QEMU ignores it too)")
            }
            ClassfulMask {
                at,
                addr,
                prefix,
                passt: true,
            } => write!(
                f,
                "{at}: no prefix given, so {addr} gets its address class's /{prefix} (as passt does)"
            ),
            ClassfulMask { at, prefix, .. } => write!(
                f,
                "{at}: no prefix given, so QEMU's classful mask /{prefix} applies"
            ),
            NetworkAddress { addr, guest } => write!(
                f,
                "{addr} is a network address: slirp semantics give the guest {guest}"
            ),
            AddressIsNetwork {
                addr,
                network,
                guest,
            } => write!(
                f,
                "{addr} is read as the network {network} (slirp semantics): the guest gets \
                 {guest}, not {addr}; --profile passt hands out the address as given"
            ),
            HostBitsSet { at, what, network } => {
                write!(f, "{at} has host bits set: the {what} is {network}")
            }
            PoolPastBroadcast {
                first,
                last,
                broadcast,
                network,
            } => write!(
                f,
                "the DHCP pool {first}-{last} runs into the broadcast address {broadcast} of \
                 {network} (QEMU does not check this)"
            ),
            PoolIncludes {
                first,
                last,
                what,
                addr,
            } => write!(
                f,
                "the DHCP pool {first}-{last} includes the {what} {addr}: a guest may be leased it"
            ),
            Ipv6AddressIsPrefix {
                addr,
                prefix,
                gateway,
            } => write!(
                f,
                "{addr} is read as the IPv6 prefix {prefix} (slirp semantics): the guest \
                 autoconfigures its own address, and the gateway is {gateway}"
            ),
            Ipv6DnsIsGateway { dns } => write!(
                f,
                "the IPv6 DNS address {dns} is the gateway's address (QEMU does not check this)"
            ),
            Ipv6AddressNotLeased { addr, prefix } => write!(
                f,
                "the guest's IPv6 address {addr} is not handed out: the DHCPv6 server is \
                 stateless (as slirp's), so the guest autoconfigures its address in {prefix}"
            ),
            TftpRootNotDir { root } => write!(
                f,
                "tftp={} is not a directory: every TFTP request will get File not found",
                root.display()
            ),
            BootFileMissing { bootfile, root } => write!(
                f,
                "bootfile={bootfile} is not a file in tftp={}: the guest's network boot will \
                 not find it",
                root.display()
            ),
            BootFileWithoutTftp { bootfile } => write!(
                f,
                "bootfile={bootfile} without tftp=: the TFTP server refuses every request, so \
                 the boot file cannot be fetched from the gateway"
            ),
            ForwardOutsidePool {
                origin,
                addr,
                first,
                last,
            } => write!(
                f,
                "{origin}: {addr} is not an address the DHCP server hands out ({first}-{last})"
            ),
            ForwardsOpen { origins } => {
                let one = origins.len() == 1;
                write!(
                    f,
                    "{} listen{} on every host address: other machines can reach the guest \
                     through {}",
                    origins.join(", "),
                    if one { "s" } else { "" },
                    if one { "it" } else { "them" }
                )
            }
            ExecInPool {
                origin,
                addr,
                first,
                last,
                this,
            } => write!(
                f,
                "{origin}: {addr} is an address the DHCP server hands out ({first}-{last}): the \
                 guest that gets it cannot reach {this}"
            ),
            DnsWithoutUdp { dns } => write!(
                f,
                "--no-udp: DHCP still offers the DNS address {dns}, but its relay is UDP, so the \
                 guest's lookups go unanswered"
            ),
            MtuBelowIpv6 { mtu } => write!(
                f,
                "MTU {mtu} is below IPv6's minimum of 1280: the guest will not use IPv6 on this link"
            ),
        }
    }
}
