//! The guest-network options of the command line.
//!
//! They belong to the program, not to the policy layer: clap parses them here and
//! [`PolicyArgs::inputs`] hands the policy layer the plain [`policy::Inputs`] it reads. The
//! front ends, their precedence and every check on the values are `policy`'s; what is here is
//! only names, help texts and clap's own rules (which options exclude or need others).

use std::path::PathBuf;

use policy::explain::{self, ExplainFormat};
use policy::{ConfigError, Inputs, PasstOptions, Profile, Resolved};

/// `--profile`: clap's view of [`policy::Profile`], with the help texts `--help` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// QEMU slirp's derivation (an address names the network).
    Slirp,
    /// passt's reading (the address is the guest's own), minus passt's broken cases.
    Passt,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Slirp => Profile::Slirp,
            ProfileArg::Passt => Profile::Passt,
        }
    }
}

/// Output format of `--explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FormatArg {
    #[default]
    Text,
    Json,
}

impl From<FormatArg> for ExplainFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => ExplainFormat::Text,
            FormatArg::Json => ExplainFormat::Json,
        }
    }
}

/// The guest-network options. Flattened into [`crate::cli::Args`].
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Guest network")]
pub struct PolicyArgs {
    /// How addresses become the guest's view: slirp (QEMU's derivation; default) or passt
    /// (the address as given)
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: Option<ProfileArg>,

    /// libvirt domain XML or <interface> element to take the guest's network from ('-': stdin)
    #[arg(long, value_name = "FILE", conflicts_with = "slirp")]
    pub libvirt_xml: Option<PathBuf>,

    /// Which <interface> of the XML: alias name, MAC address or index (0-based)
    #[arg(long, value_name = "SEL", requires = "libvirt_xml")]
    pub interface: Option<String>,

    /// QEMU -netdev user options (net=, host=, dhcpstart=, dns=, hostfwd=, guestfwd=, smb=, ...);
    /// repeatable
    #[arg(long, value_name = "OPTS")]
    pub slirp: Vec<String>,

    /// IPv4 or IPv6 address, optionally ADDR/PREFIX (once per family)
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub address: Vec<String>,

    /// IPv4 netmask: a prefix length or a dotted mask
    #[arg(long, value_name = "MASK")]
    pub netmask: Option<String>,

    /// Gateway address the guest is given (once per family)
    #[arg(long, value_name = "ADDR")]
    pub gateway: Vec<String>,

    /// The gateway's MAC address as the guest sees it (not the guest's own)
    #[arg(long = "mac-addr", value_name = "MAC")]
    pub mac_addr: Option<String>,

    /// DNS address offered to the guest and relayed to the host's resolver (once per family)
    #[arg(long, value_name = "ADDR")]
    pub dns: Vec<String>,

    /// DNS search domains (space-separated or repeated; 'none' for none)
    #[arg(long, value_name = "LIST")]
    pub search: Vec<String>,

    /// Link MTU, also sent in DHCP (68-65520; 0: do not advertise)
    #[arg(long, value_name = "MTU")]
    pub mtu: Option<String>,

    /// Host name the guest is given by DHCP (option 12), as passt's -H
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Forward host TCP ports to the guest, passt syntax: 8080, 1000-1010:2000-2010,
    /// 127.0.0.1/22, ~25, all
    #[arg(short = 't', long = "tcp-ports", value_name = "SPEC")]
    pub tcp_ports: Vec<String>,

    /// Forward host UDP ports to the guest (syntax as -t)
    #[arg(short = 'u', long = "udp-ports", value_name = "SPEC")]
    pub udp_ports: Vec<String>,

    /// Do not map the gateway address to the host's loopback
    #[arg(long = "no-map-gw")]
    pub no_map_gw: bool,

    /// IPv4 only: the guest gets no IPv6 (as --slirp ipv6=off)
    #[arg(short = '4', long = "ipv4-only")]
    pub ipv4_only: bool,

    /// IPv6 only: the guest gets no IPv4 (as --slirp ipv4=off)
    #[arg(short = '6', long = "ipv6-only")]
    pub ipv6_only: bool,

    /// Do not answer DHCP
    #[arg(long = "no-dhcp")]
    pub no_dhcp: bool,

    /// Do not answer DHCPv6
    #[arg(long = "no-dhcpv6")]
    pub no_dhcpv6: bool,

    /// Ignore NDP: no neighbour or router advertisements
    #[arg(long = "no-ndp")]
    pub no_ndp: bool,

    /// Send no router advertisements (neighbour advertisements still answered)
    #[arg(long = "no-ra")]
    pub no_ra: bool,

    /// Drop the guest's TCP (no TCP forwards then)
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,

    /// Drop the guest's UDP, DNS relay included (DHCP, DHCPv6, TFTP still answer)
    #[arg(long = "no-udp")]
    pub no_udp: bool,

    /// Drop echo requests (ICMP and ICMPv6), to the gateway too
    #[arg(long = "no-icmp")]
    pub no_icmp: bool,

    /// Print what the guest will see, then exit
    #[arg(long)]
    pub explain: bool,

    /// Format of --explain
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        requires = "explain"
    )]
    pub format: FormatArg,
}

impl From<&PolicyArgs> for Inputs {
    fn from(a: &PolicyArgs) -> Self {
        Inputs {
            profile: a.profile.map(Profile::from).unwrap_or_default(),
            libvirt_xml: a.libvirt_xml.clone(),
            interface: a.interface.clone(),
            slirp: a.slirp.clone(),
            passt: PasstOptions {
                address: a.address.clone(),
                netmask: a.netmask.clone(),
                gateway: a.gateway.clone(),
                mac_addr: a.mac_addr.clone(),
                dns: a.dns.clone(),
                search: a.search.clone(),
                mtu: a.mtu.clone(),
                hostname: a.hostname.clone(),
                tcp_ports: a.tcp_ports.clone(),
                udp_ports: a.udp_ports.clone(),
                no_map_gw: a.no_map_gw,
                ipv4_only: a.ipv4_only,
                ipv6_only: a.ipv6_only,
                no_dhcp: a.no_dhcp,
                no_dhcpv6: a.no_dhcpv6,
                no_ndp: a.no_ndp,
                no_ra: a.no_ra,
                no_tcp: a.no_tcp,
                no_udp: a.no_udp,
                no_icmp: a.no_icmp,
            },
        }
    }
}

impl PolicyArgs {
    /// What the policy layer reads.
    pub fn inputs(&self) -> Inputs {
        Inputs::from(self)
    }

    /// Read the configuration and resolve it into the plan.
    pub fn build(&self) -> Result<Resolved, ConfigError> {
        self.inputs().build()
    }

    /// [`build`](Self::build) with the text of `--libvirt-xml` already at hand.
    pub fn build_with_xml(&self, xml: Option<&str>) -> Result<Resolved, ConfigError> {
        self.inputs().build_with_xml(xml)
    }

    /// The `--explain` text in the chosen format, or `None` without `--explain`.
    pub fn explain_output(&self, resolved: &Resolved) -> Option<String> {
        self.explain
            .then(|| explain::render(resolved, self.format.into()))
    }
}
