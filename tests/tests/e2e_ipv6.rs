//! End-to-end IPv6: a real guest behind `vhost-net-user` autoconfigures from the backend's
//! router advertisement exactly as behind QEMU slirp (also with a custom `ipv6-net=`), pings
//! the gateway, fetches over IPv6 from the host's loopback through the gateway address
//! (fec0::2 stands for ::1), and runs iperf3 over IPv6 both ways.
//!
//! All traffic stays on this machine: the servers listen on the host's ::1.

use vnu_tests::{
    Backend, GuestOpts, GuestRun, IPV6_KEYS, Net, assert_same_keys, boot, e2e_ready, hostsrv,
};

/// Seconds the guest waits at most for SLAAC (the wait ends when the address is there; behind
/// QEMU slirp a guest's first solicitation sometimes goes missing and the next is 4 s or more
/// later).
const V6WAIT: u32 = 20;

/// Guest script prologue: wait until the autoconfigured address has passed duplicate address
/// detection, so that connections use it rather than the link-local one.
const WAIT_ADDRESS: &str = "for i in $(seq 50); do ip -6 addr show eth0 | grep inet6 | grep -v fe80 | grep -qv tentative && break; sleep 0.2; done\n";

/// `key=value` printed by the guest script (its `run:` lines).
fn run_value<'a>(run: &'a GuestRun, key: &str) -> Option<&'a str> {
    run.run
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// Each of `keys` is an iperf3 rate above zero; prints them.
fn assert_rates(run: &GuestRun, keys: &[&str], context: &str) {
    for key in keys {
        let rate: f64 = run_value(run, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} rate\n{context}"));
        assert!(rate > 0.0, "{key} = {rate}\n{context}");
        println!("{key} = {rate} Mbit/s");
    }
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
    let _iperf = hostsrv::iperf3_server("::1", iperf_port);
    let script = format!(
        "{WAIT_ADDRESS}ping -6 -c 2 -W 3 fec0::2 >/dev/null 2>&1 && echo v6.ping_gw=ok || echo v6.ping_gw=fail\n\
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
    assert_rates(&run, &["v6.iperf_tx", "v6.iperf_rx"], &context);
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
        "{}\nbackend log:\n{}",
        ours.report(),
        vnu_tests::tail(&backend.log(), 30)
    );
    assert_same_keys(&slirp, &ours, IPV6_KEYS, &backend.log());

    // What --explain says of IPv6 is what the guest got: its address is in the explained
    // prefix, and its default route goes to the explained gateway's link-local form.
    let explain = std::process::Command::new(vnu_tests::backend_bin().expect("backend"))
        .args(["--slirp", opts, "--explain", "--format", "json"])
        .output()
        .expect("--explain");
    let plan: serde_json::Value =
        serde_json::from_slice(&explain.stdout).expect("--explain --format json is JSON");
    let field = |name: &str| -> &str {
        plan["ipv6"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no ipv6.{name} string in {plan}"))
    };
    let prefix: std::net::Ipv6Addr = field("prefix").parse().expect("prefix");
    let gateway: std::net::Ipv6Addr = field("gateway").parse().expect("gateway");
    let addr: std::net::Ipv6Addr = ours
        .get("guest.addr6")
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("guest address");
    assert_eq!(
        addr.segments()[..4],
        prefix.segments()[..4],
        "--explain prefix {prefix} vs guest {addr}"
    );
    let router = format!("fe80::{:x}", gateway.segments()[7]);
    assert_eq!(
        ours.get("guest.route6"),
        Some(format!("default via {router} dev eth0").as_str()),
        "--explain gateway {gateway}"
    );
}

/// The remote test host's IPv6 address on the veth, and the host namespace's end.
const REMOTE6: &str = "2001:db8:6::1";
const HOST6: &str = "2001:db8:6::2";
/// A prefix the backend's namespace routes nowhere (`ip route add unreachable`), and a host in it.
const UNROUTED6: &str = "2001:db8:99::/48";
const UNROUTED_HOST6: &str = "2001:db8:99::1";

/// Over IPv6 to a remote host: the guest fetches 16 MiB from a test host in its own network
/// namespace (IPv6 on the veth, nothing else) and runs iperf3 -6 both ways with it. A
/// connection to a prefix the backend's namespace has an `unreachable` route for fails in the
/// guest at once, with the backend's ICMPv6 error, not after the guest's SYN timeout (and
/// nothing leaves the namespace).
#[test]
fn ipv6_to_a_remote_host_in_a_namespace() {
    use vnu_tests::netns::{self, Netns, boot_in, veth};
    if !e2e_ready() || !netns::ready() {
        return;
    }
    let host = Netns::new("h6").expect("netns H");
    let remote = Netns::new("r6").expect("netns R");
    for ns in [&host, &remote] {
        // Addresses usable at once, without duplicate address detection.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
            .expect("sysctl");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
            .expect("sysctl");
    }
    veth(
        &host,
        &format!("{HOST6}/64"),
        &remote,
        &format!("{REMOTE6}/64"),
    )
    .expect("veth");
    host.ip(&["-6", "route", "add", "default", "via", REMOTE6])
        .expect("default route");
    host.ip(&["-6", "route", "add", "unreachable", UNROUTED6])
        .expect("unreachable route");

    let dir = vnu_tests::TempDir::new("v6remote").expect("temp dir");
    let body = hostsrv::blob(16 << 20);
    let want_sha = hostsrv::sha256_16(&body);
    std::fs::write(dir.join("blob"), &body).expect("blob");
    let http = remote
        .spawn(
            "python3",
            &[
                "-m",
                "http.server",
                "-b",
                REMOTE6,
                "-d",
                dir.path().to_str().expect("utf-8 path"),
                "8080",
            ],
            &dir.join("http.log"),
        )
        .expect("HTTP server");
    let iperf = remote
        .spawn(
            "iperf3",
            &["-s", "-B", REMOTE6, "-p", "5201"],
            &dir.join("iperf.log"),
        )
        .expect("iperf3 server");
    // The guest needs seconds to boot; the servers are listening long before it asks (the
    // harness's readiness check reads IPv4 tables only). Both are killed on drop.
    let _servers = (http, iperf);

    let backend = Backend::start_in(&host, &[]).expect("backend in H");
    let script = format!(
        "{WAIT_ADDRESS}echo v6r.fetch_sha=$(wget -q -O - http://[{REMOTE6}]:8080/blob | sha256sum | cut -c1-16)\n\
         echo v6r.iperf_tx=$(iperf3 -6 -c {REMOTE6} -t 2 -f m 2>&1 | awk '/receiver/{{print $(NF-2)}}')\n\
         echo v6r.iperf_rx=$(iperf3 -6 -c {REMOTE6} -t 2 -R -f m 2>&1 | awk '/receiver/{{print $(NF-2)}}')\n\
         t0=$(date +%s); out=$(nc -w 30 {UNROUTED_HOST6} 80 < /dev/null 2>&1); rc=$?\n\
         echo v6r.unrouted=\"rc $rc after $(($(date +%s) - t0)) s: $out\"\n"
    );
    let run = boot_in(
        &host,
        &GuestOpts::new("v6-remote", backend.net())
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
        run_value(&run, "v6r.fetch_sha"),
        Some(want_sha.as_str()),
        "16 MiB over IPv6 from the remote host\n{context}"
    );
    assert_rates(&run, &["v6r.iperf_tx", "v6r.iperf_rx"], &context);
    let unrouted = run_value(&run, "v6r.unrouted").unwrap_or_default();
    let fast = ["after 0 s", "after 1 s", "after 2 s"]
        .iter()
        .any(|t| unrouted.contains(t));
    assert!(
        !unrouted.starts_with("rc 0")
            && fast
            && (unrouted.contains("No route to host") || unrouted.contains("unreachable")),
        "a connection to {UNROUTED_HOST6} must fail at once as unreachable: {unrouted}\n{context}"
    );
}
