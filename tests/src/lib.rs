//! Harness for the end-to-end tests: real QEMU guests behind the backend (or behind QEMU slirp,
//! for reference).
//!
//! # Theory of operation
//!
//! The guest is a Debian kernel with a busybox initramfs built by `scripts/build-guest.sh` (once
//! per process, cached on disk). At boot it runs DHCP, checks its gateway, prints what it sees as
//! `key=value` lines between `=== VNU-GUEST BEGIN` and `=== VNU-GUEST END`, runs an optional shell
//! script whose output lines come back prefixed `run: `, and powers off. A boot is one QEMU
//! process (TCG, about 10 s of one core): its serial console goes to a file, parsed when QEMU
//! exits into a [`GuestRun`].
//!
//! [`Backend`] runs `vhost-net-user --socket-path DIR/vu.sock ARGS...` (the vhost-user ring
//! link) or `vhost-net-user --stream DIR/vu.sock ARGS...` (the stream link, QEMU `-netdev
//! stream`), as its [`Link`] says, with its stderr in a file, and waits for the socket;
//! [`Backend::net`] is the QEMU network for either link. [`boot`] takes a [`GuestOpts`] (the
//! network, the script, ...) and returns the parsed run. Every child process is killed when its
//! owner is dropped, and every boot is bounded by a timeout, so a failing test never leaves QEMU
//! or a backend behind.
//!
//! Cargo runs the test functions of a binary in parallel threads. [`boot`] holds one of a fixed
//! number of slots (`VNU_E2E_JOBS`, default: the number of CPUs) for the life of its QEMU, so
//! parallel tests queue rather than starve each other's timeouts; [`boot_all`] boots several
//! guests at once from one test.
//!
//! Environment: `VNU_BIN` (the backend binary), `VNU_QEMU` (the QEMU binary),
//! `VNU_GUEST_CACHE` (the guest build), `VNU_BOOT_TIMEOUT` (seconds per boot, default 180),
//! `VNU_E2E_JOBS`, `VNU_KEEP_TMP=1` (keep temp dirs: consoles, logs, sockets),
//! `VNU_E2E_ALLOW_SKIP=1` (let tests pass when QEMU is missing instead of failing).
//!
//! # Layout
//!
//! One module per concern, re-exported here so that tests name everything as `vnu_tests::NAME`:
//! `env` (where the binaries are), `skip` (tests that cannot run here), `tempdir`, `process`
//! (signals, bounded waits), `image` (the guest build), `backend`, `qemu` (command lines),
//! `slots`, `guest` (a running QEMU), `boot`, `guest_run` (what a guest reported), `queues` (a
//! multiqueue guest's per-queue counters); [`netns`],
//! [`hostsrv`] and [`libvirt`] (real libvirt in the Debian 13 root) are public modules of their
//! own.

mod backend;
mod boot;
mod env;
mod error;
mod guest;
mod guest_run;
pub mod hostsrv;
mod image;
pub mod libvirt;
pub mod netns;
mod process;
mod qemu;
mod queues;
mod skip;
mod slots;
mod tempdir;

pub use backend::{Backend, Finished, Link, run_backend_to_exit, summary_counter};
pub use boot::{assert_runs_as_slirp, boot, boot_all, boot_reference};
pub use env::{backend_bin, find_program, qemu_bin, target_dir, workspace_root};
pub use error::{Error, Result};
pub use guest::{RunningGuest, SlottedGuest, spawn, spawn_slotted};
pub use guest_run::{
    BEGIN_MARKER, END_MARKER, GuestRun, IPV4_KEYS, IPV6_KEYS, SLIRP_DEFAULT_V4, SLIRP_DEFAULT_V6,
    assert_same_keys, diff_keys,
};
pub use image::{GuestImage, guest_cache, guest_image, network_boot_files};
pub use process::tail;
pub use qemu::{GUEST_MAC, GuestOpts, Net, base64};
pub use queues::{Measure, QUEUE_STATS_SCRIPT, QueueCounters};
pub use skip::{e2e_ready, require_program, skip};
pub use tempdir::TempDir;
