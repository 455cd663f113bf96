//! End-to-end foundation: a real QEMU guest behind `vhost-net-user` sees what it would see behind
//! QEMU slirp (`-netdev user`), the backend serves one QEMU after another, and its CLI extras
//! (`--print-capabilities`, `--pcap`, `--one-off`) do what they say.
//!
//! Every test that boots a guest behind the backend runs over both links ([`Link`]): the
//! vhost-user ring (`--socket-path`, tests named `NAME::over_ring`) and the stream link
//! (`--stream`, QEMU `-netdev stream`, `NAME::over_stream`). Each is one function taking the
//! link; [`both_links!`] declares its two tests.
//!
//! Each guest boot takes about 10 s of one core (TCG). Boots shared by several tests are done once
//! per process ([`slirp_reference`], and [`backend_default`] once per link).

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use vnu_tests::{
    Backend, GuestOpts, GuestRun, IPV4_KEYS, IPV6_KEYS, Link, Net, SLIRP_DEFAULT_V4,
    SLIRP_DEFAULT_V6, assert_same_keys, backend_bin, boot, both_links, e2e_ready, require_program,
};

/// Seconds a guest waits at most for SLAAC. The answer to its first router solicitation
/// usually configures it within 3 s, but now and then (behind QEMU slirp too) the first
/// solicitation goes missing and the next comes 4 s or more later; the wait ends as soon as
/// the address is there.
const SLIRP_V6WAIT: u32 = 20;

/// The default QEMU slirp guest, booted once per process.
fn slirp_reference() -> &'static GuestRun {
    static RUN: OnceLock<Result<GuestRun, String>> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        boot(&GuestOpts::new("slirp", Net::slirp()).v6wait(SLIRP_V6WAIT)).map_err(|e| e.to_string())
    });
    match run {
        Ok(run) => run,
        Err(e) => panic!("the QEMU slirp reference guest failed (a harness problem):\n{e}"),
    }
}

/// A guest behind a backend started with no options, booted once per process and link, with
/// the backend's log.
struct BackendRun {
    run: Result<GuestRun, String>,
    log: String,
}

fn backend_default(link: Link) -> &'static BackendRun {
    static RING: OnceLock<BackendRun> = OnceLock::new();
    static STREAM: OnceLock<BackendRun> = OnceLock::new();
    let cell = match link {
        Link::Ring => &RING,
        Link::Stream => &STREAM,
    };
    cell.get_or_init(|| {
        let backend = match Backend::start_link(link, &[]) {
            Ok(b) => b,
            Err(e) => {
                return BackendRun {
                    run: Err(e.to_string()),
                    log: String::new(),
                };
            }
        };
        let name = format!("ours-{link}");
        let run = boot(&GuestOpts::new(&name, backend.net()).v6wait(SLIRP_V6WAIT))
            .map_err(|e| e.to_string());
        BackendRun {
            run,
            log: backend.log(),
        }
    })
}

fn backend_log_context(log: &str) -> String {
    format!("backend log:\n{}", vnu_tests::tail(log, 40))
}

/// Harness self-check: the guest behind QEMU slirp reports exactly slirp's measured defaults
/// (`SLIRP_DEFAULT_V4`, `SLIRP_DEFAULT_V6`). If this fails, the harness or the guest is broken,
/// not the backend.
#[test]
fn slirp_reference_matches_guest_view() {
    if !e2e_ready() {
        return;
    }
    let run = slirp_reference();
    run.assert_values(SLIRP_DEFAULT_V4, "");
    run.assert_values(SLIRP_DEFAULT_V6, "");
    assert_eq!(
        run.all("guest.route"),
        [
            "default via 10.0.2.2 dev eth0",
            "10.0.2.0/24 dev eth0 scope link src 10.0.2.15"
        ],
        "{}",
        run.report()
    );
}

/// The backend's default environment is slirp's: 10.0.2.15/24, router 10.0.2.2, DNS 10.0.2.3,
/// lease 86400, no MTU option, gateway MAC 52:55:0a:00:02:02, and the gateway answers ping.
fn backend_default_environment(link: Link) {
    if !e2e_ready() {
        return;
    }
    let b = backend_default(link);
    let run = match &b.run {
        Ok(run) => run,
        Err(e) => panic!("{e}\n{}", backend_log_context(&b.log)),
    };
    run.assert_values(SLIRP_DEFAULT_V4, &backend_log_context(&b.log));
    run.assert_values(SLIRP_DEFAULT_V6, &backend_log_context(&b.log));
}

both_links!(backend_default_environment);

/// The same guest sees the same environment, IPv4 and IPv6 (SLAAC address, default route),
/// behind the backend as behind QEMU slirp.
fn backend_matches_slirp(link: Link) {
    if !e2e_ready() {
        return;
    }
    // Both boots run at once: the reference in a second thread.
    let (slirp, ours) = std::thread::scope(|s| {
        let slirp = s.spawn(slirp_reference);
        let ours = backend_default(link);
        (slirp.join().expect("slirp reference thread"), ours)
    });
    let run = match &ours.run {
        Ok(run) => run,
        Err(e) => panic!("{e}\n{}", backend_log_context(&ours.log)),
    };
    assert_same_keys(slirp, run, IPV4_KEYS, &backend_log_context(&ours.log));
    assert_same_keys(slirp, run, IPV6_KEYS, &backend_log_context(&ours.log));
}

both_links!(backend_matches_slirp);

/// A backend started without --one-off serves a second QEMU on the same socket after the first
/// has gone, and it gets the same lease.
fn backend_serves_second_frontend(link: Link) {
    if !e2e_ready() {
        return;
    }
    let mut backend = Backend::start_link(link, &[]).expect("starting the backend");
    let (first_name, second_name) = (format!("ours-{link}-first"), format!("ours-{link}-second"));
    let first = boot(&GuestOpts::new(&first_name, backend.net()))
        .unwrap_or_else(|e| panic!("{e}\n{}", backend_log_context(&backend.log())));
    assert!(
        backend.is_running(),
        "the backend exited after the first QEMU went away (it must keep serving without \
         --one-off)\n{}",
        backend_log_context(&backend.log())
    );
    let second = boot(&GuestOpts::new(&second_name, backend.net()))
        .unwrap_or_else(|e| panic!("{e}\n{}", backend_log_context(&backend.log())));
    let context = backend_log_context(&backend.log());
    for run in [&first, &second] {
        run.assert_values(
            &[
                ("dhcp.status", "bound"),
                ("dhcp.ip", "10.0.2.15"),
                ("guest.gw_ping", "ok"),
            ],
            &context,
        );
    }
    assert_same_keys(&first, &second, IPV4_KEYS, &context);
    assert!(
        backend.is_running(),
        "the backend exited after the second QEMU\n{context}"
    );
}

both_links!(backend_serves_second_frontend);

/// QEMU's vhost-user backend convention: `--print-capabilities` prints a JSON object with
/// `"type": "net"` and exits 0.
#[test]
fn print_capabilities_says_net() {
    let bin = backend_bin().expect("backend binary");
    let out = Command::new(&bin)
        .arg("--print-capabilities")
        .output()
        .expect("running the backend");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--print-capabilities exited {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let compact: String = stdout.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.starts_with('{') && compact.ends_with('}'),
        "not a JSON object: {stdout}"
    );
    assert!(
        compact.contains(r#""type":"net""#),
        "no \"type\": \"net\" in {stdout}"
    );
}

/// `--pcap FILE` records the guest's traffic both ways in a file tcpdump reads: the DHCP
/// exchange and the ARP for the gateway.
fn pcap_records_dhcp_and_arp(link: Link) {
    if !e2e_ready() || !require_program("tcpdump", "tcpdump") {
        return;
    }
    let pcap_dir = vnu_tests::TempDir::new("pcap").expect("temp dir");
    let pcap = pcap_dir.join("capture.pcap");
    let mut backend = Backend::start_link(link, &["--pcap", pcap.to_str().expect("utf-8 path")])
        .expect("backend");
    let name = format!("ours-{link}-pcap");
    let run = boot(&GuestOpts::new(&name, backend.net()));
    let status = backend.stop();
    let context = backend_log_context(&backend.log());
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    assert!(
        status.success(),
        "the backend exited {status} on SIGTERM\n{context}"
    );
    let out = Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(&pcap)
        .output()
        .expect("running tcpdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tcpdump -r {} failed ({}): {err}\n{context}",
        pcap.display(),
        out.status
    );
    assert!(err.contains("EN10MB"), "the capture is not Ethernet: {err}");
    for want in [
        "BOOTP/DHCP, Request",
        "BOOTP/DHCP, Reply",
        // With -e tcpdump names the ethertype first: "ethertype ARP (0x0806), length 42: Request".
        "52:54:00:41:2c:49 > ff:ff:ff:ff:ff:ff, ethertype ARP",
        "Request who-has 10.0.2.2 tell 10.0.2.15",
        "52:55:0a:00:02:02 > 52:54:00:41:2c:49, ethertype ARP (0x0806), length 60: Reply 10.0.2.2 is-at 52:55:0a:00:02:02",
        "10.0.2.2 > 10.0.2.15: ICMP echo reply",
    ] {
        assert!(
            text.contains(want),
            "no `{want}` in the capture:\n{}\nguest report:\n{}{context}",
            vnu_tests::tail(&text, 40),
            run.report()
        );
    }
}

both_links!(pcap_records_dhcp_and_arp);

/// With `--one-off` the backend exits (status 0) once its QEMU disconnects.
fn one_off_exits_after_the_frontend(link: Link) {
    if !e2e_ready() {
        return;
    }
    let mut backend = Backend::start_link(link, &["--one-off"]).expect("backend");
    let name = format!("ours-{link}-one-off");
    let run = boot(&GuestOpts::new(&name, backend.net()));
    let status = backend.wait_exit(Duration::from_secs(10));
    let context = backend_log_context(&backend.log());
    let run = run.unwrap_or_else(|e| panic!("{e}\n{context}"));
    run.assert_values(&[("dhcp.status", "bound")], &context);
    match status {
        Some(s) => assert!(s.success(), "--one-off backend exited {s}\n{context}"),
        None => panic!("--one-off backend still running 10 s after QEMU exited\n{context}"),
    }
}

both_links!(one_off_exits_after_the_frontend);
