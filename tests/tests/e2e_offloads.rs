//! End-to-end offloads and the stream link: the guest's driver negotiates checksum and
//! segmentation offloads with the backend (`ethtool -k` inside shows them on), and transfers
//! stay intact both ways with them on, with all of them off (QEMU's `csum=off,...`), and over
//! the stream link (`--stream`, no offloads, no shared memory), which must also give the guest
//! slirp's environment. A fast one-way UDP stream from the guest is served with its kicks
//! off, as bulk TCP is, and what follows it is served as before.
//!
//! All traffic stays on this machine: the servers listen on the host's 127.0.0.1, which the
//! guest reaches as its gateway 10.0.2.2.

use vnu_tests::{
    Backend, GuestOpts, GuestRun, SLIRP_DEFAULT_V4, SLIRP_DEFAULT_V6, boot, e2e_ready, hostsrv,
};

const TRANSFER: usize = 4 << 20;
/// QEMU device properties that turn every offload off.
const OFFLOADS_OFF: &str =
    "csum=off,guest_csum=off,host_tso4=off,host_tso6=off,guest_tso4=off,guest_tso6=off";
/// ethtool's names for what the offloads become in the guest's driver.
const FEATURES: &[&str] = &[
    "tx-checksumming",
    "rx-checksumming",
    "tcp-segmentation-offload",
    "rx-gro-hw",
];

/// `key=value` printed by the guest script (its `run:` lines).
fn run_value<'a>(run: &'a GuestRun, key: &str) -> Option<&'a str> {
    run.run
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// What a guest reports after a download and an upload through its gateway.
struct Transfer {
    run: GuestRun,
    want_download: String,
    log: String,
}

impl Transfer {
    fn context(&self) -> String {
        format!(
            "{}\nbackend log:\n{}",
            self.run.report(),
            vnu_tests::tail(&self.log, 30)
        )
    }

    /// Both transfers arrived whole.
    fn assert_intact(&self) {
        let ctx = self.context();
        assert_eq!(
            run_value(&self.run, "xfer.download"),
            Some(self.want_download.as_str()),
            "download through the gateway\n{ctx}"
        );
        let sent = run_value(&self.run, "xfer.sent").unwrap_or_else(|| panic!("{ctx}"));
        let received = run_value(&self.run, "xfer.received").unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(
            received,
            format!("{TRANSFER} {sent}"),
            "upload (bytes and sha256 at the receiver)\n{ctx}"
        );
    }

    /// Each of `features` is `state` ("on" or "off") in ethtool.
    fn assert_features(&self, features: &[&str], state: &str) {
        for feature in features {
            assert_eq!(
                run_value(&self.run, &format!("ethtool.{feature}")),
                Some(state),
                "{feature}\n{}",
                self.context()
            );
        }
    }
}

/// Boots a guest behind `backend` that shows its offloads, downloads `TRANSFER` bytes from
/// the host and uploads as many.
fn transfer(name: &str, backend: &Backend, device_opts: &str, v6wait: u32) -> Transfer {
    let body = hostsrv::blob(TRANSFER);
    let want_download = hostsrv::sha256_16(&body);
    let (http_port, http) = hostsrv::http_server("127.0.0.1:0", body, 1);
    let (sink_port, sink) = hostsrv::tcp_sink("127.0.0.1:0", 1);
    let script = format!(
        "ethtool -k eth0 | grep -E '^({features}):' | sed 's/^/ethtool./; s/: /=/; s/ .*//'\n\
         echo xfer.download=$(wget -q -O - http://10.0.2.2:{http_port}/blob | sha256sum | cut -c1-16)\n\
         head -c {TRANSFER} /dev/urandom > /tmp/up\n\
         echo xfer.sent=$(sha256sum < /tmp/up | cut -c1-16)\n\
         echo xfer.received=$(nc 10.0.2.2 {sink_port} < /tmp/up)\n",
        features = FEATURES.join("|"),
    );
    let run = boot(
        &GuestOpts::new(name, backend.net())
            .script(&script)
            .device_opts(device_opts)
            .v6wait(v6wait),
    )
    .unwrap_or_else(|e| panic!("{e}\nbackend log:\n{}", backend.log()));
    let _ = http.join();
    let _ = sink.join();
    Transfer {
        run,
        want_download,
        log: backend.log(),
    }
}

#[test]
fn offloads_are_negotiated_and_transfers_stay_intact() {
    if !e2e_ready() {
        return;
    }
    let backend = Backend::start(&["-v"]).expect("backend");
    let t = transfer("offloads-on", &backend, "", 0);
    t.assert_features(FEATURES, "on");
    t.assert_intact();
    assert!(
        t.log.contains("csum=true tso4=true tso6=true"),
        "the backend did not see the offloads acked\n{}",
        t.context()
    );
}

#[test]
fn transfers_stay_intact_with_every_offload_off() {
    if !e2e_ready() {
        return;
    }
    let backend = Backend::start(&["-v"]).expect("backend");
    let t = transfer("offloads-off", &backend, OFFLOADS_OFF, 0);
    // virtio_net shows rx-checksumming on whatever was negotiated (the stack then checks);
    // the backend's log below shows GUEST_CSUM was not acked.
    t.assert_features(&FEATURES[..1], "off");
    t.assert_features(&FEATURES[2..], "off");
    t.assert_intact();
    assert!(
        t.log.contains("csum=false tso4=false tso6=false"),
        "the backend saw offloads acked\n{}",
        t.context()
    );
}

#[test]
fn stream_link_gives_slirps_environment_and_intact_transfers() {
    if !e2e_ready() {
        return;
    }
    let backend = Backend::start_stream(&[]).expect("backend --stream");
    // Up to 20 s for SLAAC: the wait ends when the address is there.
    let t = transfer("stream", &backend, "", 20);
    let ctx = t.context();
    t.run.assert_values(SLIRP_DEFAULT_V4, &ctx);
    t.run.assert_values(SLIRP_DEFAULT_V6, &ctx);
    t.assert_intact();
}

/// The guest sends UDP as fast as iperf3 can (`-b 0`, 1200-byte datagrams) to an iperf3
/// server on the host: the backend notices the one-way stream and serves it with kicks off
/// (`ring.tx_streams`), the server receives it, and a download right after it arrives whole.
#[test]
fn a_fast_udp_stream_from_the_guest_is_served_with_kicks_off_and_traffic_after_it_flows() {
    if !e2e_ready() {
        return;
    }
    let port = hostsrv::free_port("127.0.0.1");
    let server = hostsrv::iperf3_server("127.0.0.1", port);
    let body = hostsrv::blob(TRANSFER);
    let want_download = hostsrv::sha256_16(&body);
    let (http_port, http) = hostsrv::http_server("127.0.0.1:0", body, 1);
    let script = format!(
        "iperf3 -c 10.0.2.2 -p {port} -u -b 0 -l 1200 -t 2 > /tmp/udp\n\
         echo udp.receiver=$(grep receiver /tmp/udp)\n\
         echo xfer.download=$(wget -q -O - http://10.0.2.2:{http_port}/blob | sha256sum | cut -c1-16)\n"
    );
    let backend = Backend::start(&["-v"]).expect("backend");
    let run = boot(&GuestOpts::new("udp-stream", backend.net()).script(&script))
        .unwrap_or_else(|e| panic!("{e}\nbackend log:\n{}", backend.log()));
    drop(server);
    let _ = http.join();
    let summary = backend
        .connection_summary(std::time::Duration::from_secs(10))
        .unwrap_or_default();
    let ctx = format!(
        "{}\nbackend log:\n{}",
        run.report(),
        vnu_tests::tail(&backend.log(), 30)
    );
    // `... 0.00-2.00 sec 160 MBytes 671 Mbits/sec 0.010 ms 12/139810 (0.0086%) receiver`
    let receiver = run_value(&run, "udp.receiver").unwrap_or_default();
    let total: Option<u64> = receiver.split_whitespace().find_map(|t| {
        let (_, total) = t.split_once('/')?;
        total.parse().ok()
    });
    assert!(
        total.is_some_and(|n| n > 0),
        "no datagrams at the receiver: {receiver:?}\n{ctx}"
    );
    assert!(
        vnu_tests::summary_counter(&summary, "ring.tx_streams").is_some_and(|n| n > 0),
        "the stream was served with kicks on: {summary}\n{ctx}"
    );
    assert_eq!(
        run_value(&run, "xfer.download"),
        Some(want_download.as_str()),
        "download after the stream\n{ctx}"
    );
}
