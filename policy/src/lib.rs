//! Configuration front ends turned into the one immutable [`NetPlan`].
//!
//! Every front end (QEMU `-netdev user` options, libvirt `<interface>` XML, passt options)
//! produces a `NetPlan`; the NAT core consumes it and never reads configuration itself. That
//! keeps "what the guest sees" a pure function of the inputs, whichever link carries frames.
//!
//! The front ends live in their own modules ([`libvirt`], [`slirp_opts`], [`passt_opts`]); they
//! only record what the user asked for. [`profile`] alone decides what that means for the guest
//! (QEMU slirp's derivation or passt's address-as-given), [`cli`] ties them to the command line
//! and [`explain`] prints the result.

mod addr;
pub mod cli;
mod error;
pub mod explain;
pub mod libvirt;
pub mod passt_opts;
pub mod profile;
mod request;
pub mod slirp_opts;

pub use cli::{ExplainFormat, PolicyArgs};
pub use error::ConfigError;
pub use profile::{Profile, Resolved};

pub use netplan::*;
