//! `--explain`: the guest-visible plan, for people (text) and for scripts (JSON).
//!
//! Both renderings show the same facts: addresses and masks, gateway and its MAC, DNS, DHCP
//! options and lease, MTU, IPv6, port forwards, guest forwards (slirp's `guestfwd=`), the smb
//! share (slirp's `smb=`), host-loopback mapping, the services switched off (passt's
//! `--no-*`), and the warnings the profile raised. The JSON keys are a stable
//! interface, listed in `policy/EXPLAIN.md`; keys are only ever added, and `format_version`
//! changes if one changes meaning.

mod json;
mod shared;
mod text;

pub use json::{FORMAT_VERSION, render_json};
pub use text::render_text;

use crate::profile::Resolved;

/// Output format of `--explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

/// The plan in the chosen format.
pub fn render(r: &Resolved, format: ExplainFormat) -> String {
    match format {
        ExplainFormat::Text => render_text(r),
        ExplainFormat::Json => render_json(r),
    }
}

#[cfg(test)]
mod tests;
