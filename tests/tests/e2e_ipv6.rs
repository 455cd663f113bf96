//! End-to-end IPv6: a real guest behind `vhost-net-user` autoconfigures from the backend's
//! router advertisement exactly as behind QEMU slirp (also with a custom `ipv6-net=`), pings
//! the gateway, fetches over IPv6 from the host's loopback through the gateway address
//! (fec0::2 stands for ::1), and runs iperf3 over IPv6 both ways.
//!
//! All traffic stays on this machine: the servers listen on the host's ::1.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vnu_tests::{
    Backend, GuestOpts, GuestRun, IPV6_KEYS, Net, assert_same_keys, boot, e2e_ready, hostsrv,
};

/// Seconds the guest waits for SLAAC.
const V6WAIT: u32 = 8;

/// `key=value` printed by the guest script (its `run:` lines).
fn run_value<'a>(run: &'a GuestRun, key: &str) -> Option<&'a str> {
    run.run
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// A process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_server(port: u16) -> Server {
    let child = Command::new("iperf3")
        .args(["-s", "-B", "::1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (Debian package iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    Server(child)
}

#[test]
fn ipv6_over_the_backend() {
    if !e2e_ready() {
        return;
    }
    let blob = hostsrv::blob(4 << 20);
    let want_sha = hostsrv::sha256_16(&blob);
    let (http_port, http) = hostsrv::http_server("[::1]:0", blob, 1);
    let iperf_port = hostsrv::free_port("[::1]");
    let _iperf = iperf_server(iperf_port);
    let script = format!(
        "ping -6 -c 2 -W 3 fec0::2 >/dev/null 2>&1 && echo v6.ping_gw=ok || echo v6.ping_gw=fail\n\
         echo v6.fetch_sha=$(wget -q -O - http://[fec0::2]:{http_port}/blob | sha256sum | cut -c1-16)\n\
         echo v6.iperf_tx=$(iperf3 -6 -c fec0::2 -p {iperf_port} -t 2 -f m 2>&1 | awk '/receiver/{{print $(NF-2)}}')\n\
         echo v6.iperf_rx=$(iperf3 -6 -c fec0::2 -p {iperf_port} -t 2 -R -f m 2>&1 | awk '/receiver/{{print $(NF-2)}}')\n"
    );
    let backend = Backend::start(&[]).expect("backend");
    let run = boot(
        &GuestOpts::new("ours-v6", backend.net())
            .v6wait(V6WAIT)
            .script(&script),
    )
    .unwrap_or_else(|e| panic!("{e}\nbackend log:\n{}", backend.log()));
    let context = format!(
        "{}\nbackend log:\n{}",
        run.report(),
        vnu_tests::tail(&backend.log(), 30)
    );
    assert_eq!(
        run.get("guest.addr6"),
        Some("fec0::5054:ff:fe41:2c49/64"),
        "{context}"
    );
    assert_eq!(run_value(&run, "v6.ping_gw"), Some("ok"), "{context}");
    assert_eq!(
        run_value(&run, "v6.fetch_sha"),
        Some(want_sha.as_str()),
        "{context}"
    );
    for key in ["v6.iperf_tx", "v6.iperf_rx"] {
        let rate: f64 = run_value(&run, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} rate\n{context}"));
        assert!(rate > 0.0, "{key} = {rate}\n{context}");
        println!("{key} = {rate} Mbit/s");
    }
    let _ = http.join();
}

/// A custom prefix (`ipv6-net=`) gives the guest what slirp gives it for the same option.
#[test]
fn custom_ipv6_net_matches_slirp() {
    if !e2e_ready() {
        return;
    }
    let opts = "ipv6-net=fd00:1234:5678::/64";
    let backend = Backend::start(&["--slirp", opts]).expect("backend");
    let (slirp, ours) = std::thread::scope(|s| {
        let slirp =
            s.spawn(|| boot(&GuestOpts::new("slirp-v6net", Net::slirp_with(opts)).v6wait(V6WAIT)));
        let ours = boot(&GuestOpts::new("ours-v6net", backend.net()).v6wait(V6WAIT));
        (slirp.join().expect("slirp thread"), ours)
    });
    let slirp = slirp.expect("slirp guest");
    let ours = ours.unwrap_or_else(|e| panic!("{e}\nbackend log:\n{}", backend.log()));
    assert_eq!(
        ours.get("guest.addr6"),
        Some("fd00:1234:5678:0:5054:ff:fe41:2c49/64"),
        "{}",
        ours.report()
    );
    assert_same_keys(&slirp, &ours, IPV6_KEYS, &backend.log());
}
