//! What a guest reported (the `key=value` and `run: ` lines between its markers), the keys and
//! values slirp shows it, and comparisons between runs.

use std::collections::BTreeMap;
use std::time::Duration;

/// Marks the start of what the guest reports.
pub const BEGIN_MARKER: &str = "=== VNU-GUEST BEGIN";
/// Marks the end of what the guest reports; a run without it did not finish.
pub const END_MARKER: &str = "=== VNU-GUEST END";

/// The guest-visible IPv4 environment: the keys compared between backends.
pub const IPV4_KEYS: &[&str] = &[
    "dhcp.status",
    "dhcp.ip",
    "dhcp.mask",
    "dhcp.subnet",
    "dhcp.router",
    "dhcp.dns",
    "dhcp.lease",
    "dhcp.serverid",
    "dhcp.mtu",
    "dhcp.domain",
    "dhcp.search",
    "dhcp.hostname",
    "dhcp.siaddr",
    "dhcp.broadcast",
    "dhcp.boot_file",
    "guest.carrier",
    "guest.mtu",
    "guest.addr",
    "guest.gw",
    "guest.gw_ping",
    "guest.gw_mac",
    "guest.route",
    "guest.resolv_ns",
];

/// The guest-visible IPv6 environment (SLAAC address, default route). Needs a `v6wait` long
/// enough for a router advertisement (slirp's arrives about 2.5 s after the link comes up).
pub const IPV6_KEYS: &[&str] = &["guest.addr6", "guest.route6"];

/// What QEMU slirp (`-netdev user`, libslirp 4.7, QEMU 7.2) shows the test guest, as measured.
/// The backend's default environment must be the same.
pub const SLIRP_DEFAULT_V4: &[(&str, &str)] = &[
    ("dhcp.status", "bound"),
    ("dhcp.ip", "10.0.2.15"),
    ("dhcp.mask", "24"),
    ("dhcp.subnet", "255.255.255.0"),
    ("dhcp.router", "10.0.2.2"),
    ("dhcp.dns", "10.0.2.3"),
    ("dhcp.lease", "86400"),
    ("dhcp.serverid", "10.0.2.2"),
    ("dhcp.siaddr", "10.0.2.2"),
    ("dhcp.mtu", ""),
    ("dhcp.domain", ""),
    ("dhcp.search", ""),
    ("dhcp.hostname", ""),
    ("guest.addr", "10.0.2.15/24"),
    ("guest.gw", "10.0.2.2"),
    ("guest.gw_ping", "ok"),
    ("guest.gw_mac", "52:55:0a:00:02:02"),
    ("guest.mtu", "1500"),
];

/// slirp's default IPv6 environment as the test guest sees it (MAC 52:54:00:41:2c:49).
pub const SLIRP_DEFAULT_V6: &[(&str, &str)] = &[
    ("guest.addr6", "fec0::5054:ff:fe41:2c49/64"),
    ("guest.route6", "default via fe80::2 dev eth0"),
];

/// What one guest reported.
#[derive(Debug, Clone)]
pub struct GuestRun {
    pub name: String,
    /// `key=value` lines in order of appearance; a key may repeat (`guest.route`).
    pub keys: BTreeMap<String, Vec<String>>,
    /// The script's output lines, without the `run: ` prefix.
    pub run: Vec<String>,
    /// The whole serial console (kernel messages included).
    pub console: String,
    /// QEMU's own stdout/stderr (warnings).
    pub qemu_log: String,
    /// Whether the guest reached its END marker.
    pub completed: bool,
    /// From QEMU start to exit.
    pub elapsed: Duration,
}

impl GuestRun {
    /// Parses a console: the lines between the markers are `key=value` lines (keys like
    /// `dhcp.ip`) and `run: ` lines; anything else (kernel messages) is ignored.
    pub fn parse(name: &str, console: &str, qemu_log: &str, elapsed: Duration) -> GuestRun {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut run = Vec::new();
        let mut inside = false;
        let mut completed = false;
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with(BEGIN_MARKER) {
                inside = true;
                continue;
            }
            if !inside {
                continue;
            }
            if line.starts_with(END_MARKER) {
                completed = true;
                break;
            }
            if let Some(rest) = line.strip_prefix("run:") {
                run.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            } else if let Some((k, v)) = line.split_once('=') {
                let is_key = k.contains('.')
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
                if is_key {
                    keys.entry(k.to_owned())
                        .or_default()
                        .push(v.trim_end().to_owned());
                }
            }
        }
        GuestRun {
            name: name.to_owned(),
            keys,
            run,
            console: console.to_owned(),
            qemu_log: qemu_log.to_owned(),
            completed,
            elapsed,
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of `key` (empty if absent).
    pub fn all(&self, key: &str) -> &[String] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// All values of `key` joined with " | ", or `<absent>`: for comparisons and messages.
    pub fn value(&self, key: &str) -> String {
        match self.keys.get(key) {
            Some(v) => v.join(" | "),
            None => "<absent>".to_owned(),
        }
    }

    /// The exit status of the guest script, if one ran.
    pub fn run_status(&self) -> Option<i32> {
        self.get("guest.run_status").and_then(|s| s.parse().ok())
    }

    /// Every reported line, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (k, vs) in &self.keys {
            for v in vs {
                out.push_str(&format!("  {k}={v}\n"));
            }
        }
        for line in &self.run {
            out.push_str(&format!("  run: {line}\n"));
        }
        out
    }

    /// The keys among `expected` whose value differs, as "key: want X, got Y" lines.
    pub fn mismatches(&self, expected: &[(&str, &str)]) -> Vec<String> {
        expected
            .iter()
            .filter(|(k, want)| self.value(k) != *want)
            .map(|(k, want)| format!("{k}: want {want:?}, got {:?}", self.value(k)))
            .collect()
    }

    /// Panics unless every key of `expected` has that value; the message lists the mismatches,
    /// the whole report and `context` (e.g. the backend's log).
    pub fn assert_values(&self, expected: &[(&str, &str)], context: &str) {
        let bad = self.mismatches(expected);
        assert!(
            bad.is_empty(),
            "guest `{}` differs from what was expected:\n  {}\nguest report:\n{}{}",
            self.name,
            bad.join("\n  "),
            self.report(),
            context
        );
    }
}

/// Where two runs differ among `keys`: (key, value in `a`, value in `b`).
pub fn diff_keys(a: &GuestRun, b: &GuestRun, keys: &[&str]) -> Vec<(String, String, String)> {
    keys.iter()
        .filter_map(|k| {
            let (va, vb) = (a.value(k), b.value(k));
            (va != vb).then(|| (k.to_string(), va, vb))
        })
        .collect()
}

/// Panics unless `a` and `b` agree on every key of `keys`; the message is a table of the
/// differences, both reports and `context`.
pub fn assert_same_keys(a: &GuestRun, b: &GuestRun, keys: &[&str], context: &str) {
    let diff = diff_keys(a, b, keys);
    if diff.is_empty() {
        return;
    }
    let table: Vec<String> = diff
        .iter()
        .map(|(k, va, vb)| format!("  {k}: {}={va:?} {}={vb:?}", a.name, b.name))
        .collect();
    panic!(
        "guests `{}` and `{}` see different environments:\n{}\n`{}` report:\n{}`{}` report:\n{}{}",
        a.name,
        b.name,
        table.join("\n"),
        a.name,
        a.report(),
        b.name,
        b.report(),
        context
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "[    0.000000] noise\r\n\
        === VNU-GUEST BEGIN\r\n\
        guest.kernel=6.1.0-56-amd64\r\n\
        dhcp.ip=10.0.2.15\r\n\
        dhcp.mtu=\r\n\
        some kernel line\r\n\
        guest.route=default via 10.0.2.2 dev eth0\r\n\
        guest.route=10.0.2.0/24 dev eth0 scope link src 10.0.2.15\r\n\
        run: hello=world\r\n\
        run:\r\n\
        guest.run_status=3\r\n\
        === VNU-GUEST END\r\n\
        dhcp.ip=after-the-end\r\n";

    #[test]
    fn parses_keys_runs_and_markers() {
        let run = GuestRun::parse("t", CONSOLE, "", Duration::ZERO);
        assert!(run.completed);
        assert_eq!(run.get("dhcp.ip"), Some("10.0.2.15"));
        assert_eq!(run.get("dhcp.mtu"), Some(""));
        assert_eq!(run.value("dhcp.router"), "<absent>");
        assert_eq!(run.all("guest.route").len(), 2);
        assert_eq!(run.run, vec!["hello=world".to_owned(), String::new()]);
        assert_eq!(run.run_status(), Some(3));
        assert!(!run.keys.contains_key("some kernel line"));
    }

    #[test]
    fn unfinished_console_is_not_completed() {
        let run = GuestRun::parse(
            "t",
            "=== VNU-GUEST BEGIN\ndhcp.ip=1.2.3.4\n",
            "",
            Duration::ZERO,
        );
        assert!(!run.completed);
        assert_eq!(run.get("dhcp.ip"), Some("1.2.3.4"));
    }

    #[test]
    fn diff_reports_only_differing_keys() {
        let a = GuestRun::parse("a", CONSOLE, "", Duration::ZERO);
        let b = GuestRun::parse(
            "b",
            &CONSOLE.replace("dhcp.ip=10.0.2.15", "dhcp.ip=10.0.2.16"),
            "",
            Duration::ZERO,
        );
        let d = diff_keys(&a, &b, &["dhcp.ip", "dhcp.mtu", "guest.route"]);
        assert_eq!(
            d,
            vec![("dhcp.ip".into(), "10.0.2.15".into(), "10.0.2.16".into())]
        );
    }
}
