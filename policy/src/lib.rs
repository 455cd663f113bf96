//! Configuration front ends turned into the one immutable [`NetPlan`].
//!
//! Every front end (QEMU `-netdev user` options, libvirt `<interface>` XML, passt options)
//! produces a `NetPlan`; the NAT core consumes it and never reads configuration itself. That
//! keeps "what the guest sees" a pure function of the inputs, whichever link carries frames.
//!
//! The front ends live in `frontend` (libvirt XML, `--slirp`, the passt-style options and
//! the port-spec grammar two of them share); they only record what the user asked for.
//! `profile` alone decides what that means for the guest (QEMU slirp's derivation or
//! passt's address-as-given), and [`explain`] prints the result. The command line itself is
//! the binary's: it fills in [`Inputs`], so this crate needs no argument parser.

mod addr;
mod error;
pub mod explain;
mod frontend;
mod profile;
mod request;
mod warning;

pub use error::ConfigError;
pub use frontend::{Inputs, PasstOptions};
pub use profile::{Profile, Resolved};
pub use warning::Warning;

pub use netplan::*;
