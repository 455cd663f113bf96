//! End-to-end TFTP: a real guest's busybox `tftp` fetches files from the gateway (10.0.2.2 and
//! fec0::2, port 69) behind QEMU slirp (`-netdev user,tftp=DIR`) and behind the backend
//! (`--slirp tftp=DIR`, over both links), and sees the same thing: the same files, byte for
//! byte, in 512-byte blocks and with `blksize`, and the same errors for a missing file and a
//! name that climbs out of the root.
//!
//! A second guest boots from the network (QEMU's iPXE ROM, `-boot n`): DHCP names
//! `boot.ipxe`, whose script fetches the test kernel and initrd by TFTP, and the guest then
//! boots and reports as usual. Besides TFTP at volume (some 13 MB), that has two drivers use
//! the device one after the other: iPXE's, then Linux's after a reset.
//!
//! The served directory is written under the target directory, the same for every guest of
//! the run. Nothing leaves the machine: the TFTP server is inside slirp or the backend.

use std::path::PathBuf;
use std::sync::OnceLock;

use vnu_tests::hostsrv::{blob, sha256_16};
use vnu_tests::{Backend, GuestOpts, GuestRun, Link, Net, boot, both_links, e2e_ready};

/// Seconds a guest waits for SLAAC before the script runs (it fetches over IPv6 too).
const V6WAIT: u32 = 20;
/// Bytes of `boot.img`: several hundred blocks of either size.
const BOOT_IMG: usize = 300_000;

/// The served directory: `boot.img`, `even.bin` (exactly four 512-byte blocks) and
/// `sub/menu.cfg`.
fn tftp_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = vnu_tests::target_dir().join("e2e-tftp-root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub")).expect("creating the TFTP root");
        std::fs::write(root.join("boot.img"), blob(BOOT_IMG)).expect("boot.img");
        std::fs::write(root.join("even.bin"), &blob(2048)[..]).expect("even.bin");
        std::fs::write(root.join("sub/menu.cfg"), b"default linux\n").expect("menu.cfg");
        vnu_tests::network_boot_files(&root, "10.0.2.2", 0).expect("the network boot files");
        root
    })
}

/// Each fetch prints one line: what came (the SHA-256's first 16 hex digits and the size) or
/// busybox's error.
const SCRIPT: &str = r#"t() {
  name=$1; server=$2; shift 2
  rm -f /tmp/got
  if out=$(tftp -g -r "$name" -l /tmp/got "$@" "$server" 2>&1); then
    echo "got $name from $server $*: $(sha256sum < /tmp/got | cut -c1-16) $(wc -c < /tmp/got)"
  else
    echo "refused $name from $server $*: $out"
  fi
}
t boot.img 10.0.2.2
t boot.img 10.0.2.2 -b 1428
t even.bin 10.0.2.2
t sub/menu.cfg 10.0.2.2
t /sub/menu.cfg 10.0.2.2
t missing 10.0.2.2
t ../etc/passwd 10.0.2.2
t boot.img fec0::2 -b 1024
"#;

fn guest(name: &str, net: Net) -> GuestOpts {
    GuestOpts::new(name, net).v6wait(V6WAIT).script(SCRIPT)
}

/// The QEMU slirp guest, booted once per process.
fn slirp_reference() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let opts = format!("tftp={}", tftp_root().display());
        vnu_tests::boot_reference(
            &guest("slirp-tftp", Net::slirp_with(&opts)),
            &expected_lines(),
        )
        .map_err(|e| e.to_string())
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("the QEMU slirp TFTP guest failed (a harness problem):\n{e}"),
    }
}

/// What the script must print, from the files as written.
fn expected_lines() -> Vec<String> {
    let boot_img = format!("{} {BOOT_IMG}", sha256_16(&blob(BOOT_IMG)));
    let even = format!("{} 2048", sha256_16(&blob(2048)));
    let menu = format!("{} 14", sha256_16(b"default linux\n"));
    vec![
        format!("got boot.img from 10.0.2.2 : {boot_img}"),
        format!("got boot.img from 10.0.2.2 -b 1428: {boot_img}"),
        format!("got even.bin from 10.0.2.2 : {even}"),
        format!("got sub/menu.cfg from 10.0.2.2 : {menu}"),
        format!("got /sub/menu.cfg from 10.0.2.2 : {menu}"),
        "refused missing from 10.0.2.2 : tftp: server error: (1) File not found".to_owned(),
        "refused ../etc/passwd from 10.0.2.2 : tftp: server error: (2) Access violation".to_owned(),
        format!("got boot.img from fec0::2 -b 1024: {boot_img}"),
    ]
}

/// The guest fetches the same files and gets the same errors behind the backend as behind
/// QEMU slirp, and the files are the ones on the host.
fn guest_fetches_what_slirp_serves(link: Link) {
    if !e2e_ready() {
        return;
    }
    let root = tftp_root().display().to_string();
    let backend = Backend::start_link(link, &["--slirp", &format!("tftp={root}")])
        .expect("starting the backend");
    let name = format!("ours-{link}-tftp");
    let ours = guest(&name, backend.net());
    vnu_tests::assert_runs_as_slirp(slirp_reference, &expected_lines(), &ours, &backend);
}

both_links!(guest_fetches_what_slirp_serves);

/// The guest boots from the network behind the backend: iPXE takes its DHCP lease and
/// `boot.ipxe`, fetches the kernel and initrd from the backend's TFTP server, and the kernel it
/// boots (there is no `-kernel`) gets its lease again and reaches its gateway.
///
/// Over the vhost-user ring only: there the backend itself sees the device handed from iPXE's
/// driver to Linux's (over the stream link QEMU's own device model does), and the TFTP server
/// is the same engine either way, which `guest_fetches_what_slirp_serves` runs over both.
#[test]
fn guest_boots_from_the_network() {
    if !e2e_ready() {
        return;
    }
    let link = Link::Ring;
    let root = tftp_root().display().to_string();
    let opts = format!("tftp={root},bootfile=boot.ipxe");
    let backend = Backend::start_link(link, &["--slirp", &opts]).expect("starting the backend");
    let name = format!("ours-{link}-pxe");
    let run = boot(&GuestOpts::new(&name, backend.net()).network_boot());
    let log = backend.log();
    let context = format!("backend log:\n{}", vnu_tests::tail(&log, 40));
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    run.assert_values(
        &[
            ("dhcp.status", "bound"),
            ("dhcp.ip", "10.0.2.15"),
            ("dhcp.siaddr", "10.0.2.2"),
            ("dhcp.boot_file", "boot.ipxe"),
            ("guest.gw_ping", "ok"),
        ],
        &context,
    );
    assert!(run.get("guest.kernel").is_some(), "{}", run.report());
}
