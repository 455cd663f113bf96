//! vhost-net-user: a vhost-user virtio-net backend that gives QEMU guests slirp-compatible
//! user-mode networking. The binary's `main` only parses arguments; everything else is here.

pub mod api;
pub mod args;
pub mod cli;
pub mod device;
pub mod error;
pub mod exit;
pub mod passt_mode;
pub mod relay;
pub mod ring;
pub mod sandbox;
pub mod server;
pub mod stream;
mod sys;
pub mod sysconfig;
pub use sys::close_inherited;
pub mod virtq;
pub mod vnet;
