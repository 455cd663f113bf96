//! The system configuration file: defaults for what a caller's command line does not say.
//!
//! libvirt starts this program as passt with a command line of its own and nothing more, so
//! whatever an administrator wants besides (the profile, the gateway mapping, the log level, the
//! user to run as, confinement) comes from a TOML file, read in both modes:
//! [`DEFAULT_PATH`], or the file `--config` names (normal mode), or the one the environment
//! variable [`PATH_ENV`] names (both modes; `--config` wins over it). A missing default file is
//! no file; a missing named one is an error.
//!
//! Precedence: an option on the command line always wins over the file, the file over the
//! built-in defaults. Options without a default are `None` (or `false`, or zero) until given,
//! so those are told apart by their value; the few with a default value (`--sandbox`,
//! `--max-flows`, `--socket-mode`) by clap's [`clap::parser::ValueSource`], recorded in
//! [`Given`] when the command line is parsed ([`parse_command_line`]).
//!
//! Every value is checked here, and a bad one is one line naming the file, the line and the
//! key; so are keys this program does not know (a misspelt key would otherwise be a setting
//! silently not made).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::args::ProfileArg;
use crate::cli::Args;
use crate::sandbox;

/// Where the file is read from unless `--config` or [`PATH_ENV`] names another.
pub const DEFAULT_PATH: &str = "/etc/vhost-net-user/config.toml";

/// The environment variable naming the file: the passt mode's only way to name it.
pub const PATH_ENV: &str = "VHOST_NET_USER_CONFIG";

/// The options the command line gave explicitly (clap's argument ids), so that the file
/// does not override them where the option has a default value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given(Vec<String>);

impl Given {
    /// What `matches` holds from the command line itself, not from a default.
    pub fn from_matches(matches: &ArgMatches) -> Given {
        Given(
            matches
                .ids()
                .filter(|id| {
                    matches.value_source(id.as_str())
                        == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|id| id.as_str().to_string())
                .collect(),
        )
    }

    fn has(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }
}

/// Parses the process's command line as `Args::parse` does (exiting on a usage error, or
/// after `--help`), noting which options it gave.
pub fn parse_command_line() -> Args {
    let matches = Args::command().get_matches();
    from_matches(&matches).unwrap_or_else(|e| e.format(&mut Args::command()).exit())
}

/// `argv` parsed (its first item is the program's name), noting which options it gave.
pub fn try_parse_from<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    from_matches(&Args::command().try_get_matches_from(argv)?)
}

fn from_matches(matches: &ArgMatches) -> Result<Args, clap::Error> {
    let mut args = Args::from_arg_matches(matches)?;
    args.given = Given::from_matches(matches);
    Ok(args)
}

/// A file that could not be read, or that says something wrong: one line.
#[derive(Debug, thiserror::Error)]
pub enum SysConfigError {
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The file as written: every value kept with its place, checked in [`SysConfig::parse`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    profile: Option<Spanned<Value>>,
    map_gw: Option<Spanned<Value>>,
    log_level: Option<Spanned<Value>>,
    runas: Option<Spanned<Value>>,
    sandbox: Option<Spanned<Value>>,
    max_flows: Option<Spanned<Value>>,
    resolv_conf: Option<Spanned<Value>>,
    socket_mode: Option<Spanned<Value>>,
    socket_group: Option<Spanned<Value>>,
}

/// The keys, as written in the file, for the message about an unknown one.
const KEYS: &str =
    "profile, map-gw, log-level, runas, sandbox, max-flows, resolv-conf, socket-mode, socket-group";

/// What the file sets; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysConfig {
    pub profile: Option<ProfileArg>,
    pub map_gw: Option<bool>,
    pub log_level: Option<log::LevelFilter>,
    pub runas: Option<String>,
    pub sandbox: Option<sandbox::Mode>,
    pub max_flows: Option<u32>,
    pub resolv_conf: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub socket_group: Option<String>,
}

/// Reads the configuration file (the one `args.config` or `env`, the value of [`PATH_ENV`],
/// names, or [`DEFAULT_PATH`] if it exists) and fills in what the command line left to it.
/// The caller passes the environment's value so that tests need not change the process's.
pub fn apply_system_config(args: &mut Args, env: Option<OsString>) -> Result<(), SysConfigError> {
    let (path, required) = chosen_path(args.config.as_deref(), env);
    if let Some(config) = load(&path, required)? {
        config.apply_to(args);
    }
    Ok(())
}

/// The file to read, and whether it must exist: `--config`'s, else the environment's (empty
/// is unset), else the default one, which may be missing.
fn chosen_path(config: Option<&Path>, env: Option<OsString>) -> (PathBuf, bool) {
    match (config, env.filter(|e| !e.is_empty())) {
        (Some(path), _) => (path.to_owned(), true),
        (None, Some(path)) => (PathBuf::from(path), true),
        (None, None) => (PathBuf::from(DEFAULT_PATH), false),
    }
}

/// The file at `path` checked, or `None` if it is missing and need not exist.
fn load(path: &Path, required: bool) -> Result<Option<SysConfig>, SysConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => SysConfig::parse(&text, path).map(Some),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl SysConfig {
    /// Checks `text`, the file at `path` (named in messages).
    pub fn parse(text: &str, path: &Path) -> Result<SysConfig, SysConfigError> {
        let invalid = |at: usize, message: String| SysConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, at),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or_default();
            let message = e.message().trim_end().replace('\n', " ");
            // serde's "unknown field `foo`, expected one of ...", in the file's terms.
            let message = match message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
            {
                Some((key, _)) => format!("key \"{key}\": unknown key (known: {KEYS})"),
                // toml's span is the key written a second time.
                None if message == "duplicate key" => format!(
                    "key \"{}\": given twice",
                    text.get(span.clone()).unwrap_or_default().trim()
                ),
                None => message,
            };
            invalid(span.start, message)
        })?;
        // Each key's value converted by `convert`, or the one-line error saying what was
        // expected and what was found.
        fn check<T>(
            value: Option<Spanned<Value>>,
            key: &str,
            expected: &str,
            invalid: &dyn Fn(usize, String) -> SysConfigError,
            convert: impl Fn(&Value) -> Option<T>,
        ) -> Result<Option<T>, SysConfigError> {
            let Some(value) = value else {
                return Ok(None);
            };
            match convert(value.get_ref()) {
                Some(v) => Ok(Some(v)),
                None => Err(invalid(
                    value.span().start,
                    format!(
                        "key \"{key}\": expected {expected}, found {}",
                        value.get_ref()
                    ),
                )),
            }
        }
        let nonempty = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Ok(SysConfig {
            profile: check(
                file.profile,
                "profile",
                "\"slirp\" or \"passt\"",
                &invalid,
                |v| match v.as_str()? {
                    "slirp" => Some(ProfileArg::Slirp),
                    "passt" => Some(ProfileArg::Passt),
                    _ => None,
                },
            )?,
            map_gw: check(file.map_gw, "map-gw", "true or false", &invalid, |v| {
                v.as_bool()
            })?,
            log_level: check(
                file.log_level,
                "log-level",
                "\"error\", \"warn\", \"info\", \"debug\" or \"trace\"",
                &invalid,
                |v| {
                    Some(match v.as_str()? {
                        "error" => log::LevelFilter::Error,
                        "warn" => log::LevelFilter::Warn,
                        "info" => log::LevelFilter::Info,
                        "debug" => log::LevelFilter::Debug,
                        "trace" => log::LevelFilter::Trace,
                        _ => return None,
                    })
                },
            )?,
            runas: check(
                file.runas,
                "runas",
                "a string, USER or USER:GROUP",
                &invalid,
                nonempty,
            )?,
            sandbox: check(
                file.sandbox,
                "sandbox",
                "\"on\", \"off\" or \"log\"",
                &invalid,
                |v| match v.as_str()? {
                    "on" => Some(sandbox::Mode::On),
                    "off" => Some(sandbox::Mode::Off),
                    "log" => Some(sandbox::Mode::Log),
                    _ => None,
                },
            )?,
            max_flows: check(
                file.max_flows,
                "max-flows",
                "an integer, 1 to 1000000",
                &invalid,
                |v| {
                    v.as_integer()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .map(|n| n as u32)
                },
            )?,
            resolv_conf: check(
                file.resolv_conf,
                "resolv-conf",
                "a file name in a string",
                &invalid,
                |v| nonempty(v).map(PathBuf::from),
            )?,
            socket_mode: check(
                file.socket_mode,
                "socket-mode",
                "an octal mode in a string, \"0000\" to \"0777\"",
                &invalid,
                |v| crate::cli::parse_socket_mode(v.as_str()?).ok(),
            )?,
            socket_group: check(
                file.socket_group,
                "socket-group",
                "a group name or number in a string",
                &invalid,
                nonempty,
            )?,
        })
    }

    /// Fills in what the command line did not say.
    pub fn apply_to(&self, args: &mut Args) {
        fn fill<T: Clone>(slot: &mut Option<T>, from_file: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(from_file);
            }
        }
        fill(&mut args.policy.profile, &self.profile);
        fill(&mut args.runas, &self.runas);
        fill(&mut args.resolv_conf, &self.resolv_conf);
        fill(&mut args.socket_group, &self.socket_group);
        // There is no option to turn the mapping back on: `map-gw = false` is `--no-map-gw`.
        if self.map_gw == Some(false) {
            args.policy.no_map_gw = true;
        }
        if args.verbose == 0 && !args.quiet {
            args.default_log_level = self.log_level;
        }
        if let Some(mode) = self.sandbox
            && !args.given.has("sandbox")
        {
            args.sandbox = mode;
        }
        if let Some(n) = self.max_flows
            && !args.given.has("max_flows")
        {
            args.max_flows = n;
        }
        if let Some(mode) = self.socket_mode
            && !args.given.has("socket_mode")
        {
            args.socket_mode = mode;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/vhost-net-user/config.toml";

    fn parse(text: &str) -> Result<SysConfig, String> {
        SysConfig::parse(text, Path::new(PATH)).map_err(|e| e.to_string())
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("{text:?}: expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    fn args(argv: &[&str]) -> Args {
        try_parse_from(std::iter::once("vhost-net-user").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    /// `argv` with the file `text` applied.
    fn with_file(argv: &[&str], text: &str) -> Args {
        let mut a = args(argv);
        parse(text).unwrap().apply_to(&mut a);
        a
    }

    const EVERY_KEY: &str = r#"
# Every key.
profile = "passt"
map-gw = false
log-level = "warn"
runas = "vnu:kvm"
sandbox = "log"
max-flows = 100
resolv-conf = "/run/systemd/resolve/resolv.conf"
socket-mode = "0660"
socket-group = "kvm"
"#;

    #[test]
    fn every_key_is_read() {
        assert_eq!(
            parse(EVERY_KEY).unwrap(),
            SysConfig {
                profile: Some(ProfileArg::Passt),
                map_gw: Some(false),
                log_level: Some(log::LevelFilter::Warn),
                runas: Some("vnu:kvm".into()),
                sandbox: Some(sandbox::Mode::Log),
                max_flows: Some(100),
                resolv_conf: Some("/run/systemd/resolve/resolv.conf".into()),
                socket_mode: Some(0o660),
                socket_group: Some("kvm".into()),
            }
        );
        assert_eq!(parse("").unwrap(), SysConfig::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), SysConfig::default());
    }

    #[test]
    fn the_file_fills_in_what_the_command_line_leaves() {
        let a = with_file(&["--socket-path", "/tmp/s"], EVERY_KEY);
        assert_eq!(a.policy.profile, Some(ProfileArg::Passt));
        assert!(a.policy.no_map_gw);
        assert_eq!(a.log_level(), log::LevelFilter::Warn);
        assert_eq!(a.runas.as_deref(), Some("vnu:kvm"));
        assert_eq!(a.sandbox, sandbox::Mode::Log);
        assert_eq!(a.max_flows, 100);
        assert_eq!(
            a.resolv_conf.as_deref(),
            Some(Path::new("/run/systemd/resolve/resolv.conf"))
        );
        assert_eq!(a.socket_mode, 0o660);
        assert_eq!(a.socket_group.as_deref(), Some("kvm"));
        // And an empty file changes nothing of the built-in defaults.
        let a = with_file(&["--socket-path", "/tmp/s"], "");
        assert_eq!(a.policy.profile, None);
        assert!(!a.policy.no_map_gw);
        assert_eq!(a.log_level(), log::LevelFilter::Info);
        assert_eq!(a.sandbox, sandbox::Mode::On);
        assert_eq!(a.max_flows, 4096);
        assert_eq!(a.socket_mode, 0o600);
    }

    #[test]
    fn the_command_line_wins_even_when_it_says_the_default() {
        let a = with_file(
            &[
                "--socket-path",
                "/tmp/s",
                "--profile",
                "slirp",
                "--runas",
                "nobody",
                "--sandbox",
                "on",
                "--max-flows",
                "4096",
                "--resolv-conf",
                "/etc/resolv.conf",
                "--socket-mode",
                "0600",
                "--socket-group",
                "0",
            ],
            EVERY_KEY,
        );
        assert_eq!(a.policy.profile, Some(ProfileArg::Slirp));
        assert_eq!(a.runas.as_deref(), Some("nobody"));
        assert_eq!(a.sandbox, sandbox::Mode::On);
        assert_eq!(a.max_flows, 4096);
        assert_eq!(
            a.resolv_conf.as_deref(),
            Some(Path::new("/etc/resolv.conf"))
        );
        assert_eq!(a.socket_mode, 0o600);
        assert_eq!(a.socket_group.as_deref(), Some("0"));
        // -v and -q each override the file's log level.
        let a = with_file(&["--socket-path", "/tmp/s", "-v"], EVERY_KEY);
        assert_eq!(a.log_level(), log::LevelFilter::Debug);
        let a = with_file(&["--socket-path", "/tmp/s", "-q"], "log-level = \"trace\"");
        assert_eq!(a.log_level(), log::LevelFilter::Error);
        // --no-map-gw stays whatever the file says.
        let a = with_file(&["--socket-path", "/tmp/s", "--no-map-gw"], "map-gw = true");
        assert!(a.policy.no_map_gw);
    }

    #[test]
    fn only_options_from_the_command_line_count_as_given() {
        let a = args(&["--socket-path", "/tmp/s", "--max-flows", "7"]);
        assert!(a.given.has("max_flows"));
        assert!(a.given.has("socket_path"));
        // Filled in by clap's default value: not given.
        assert!(!a.given.has("sandbox"));
        assert!(!a.given.has("socket_mode"));
    }

    #[test]
    fn a_bad_value_is_one_line_naming_file_line_and_key() {
        for (text, want) in [
            (
                "# comment\n\nprofile = \"foo\"\n",
                r#"/etc/vhost-net-user/config.toml:3: key "profile": expected "slirp" or "passt", found "foo""#,
            ),
            (
                "map-gw = \"no\"",
                r#"/etc/vhost-net-user/config.toml:1: key "map-gw": expected true or false, found "no""#,
            ),
            (
                "\nlog-level = \"verbose\"",
                r#"/etc/vhost-net-user/config.toml:2: key "log-level": expected "error", "warn", "info", "debug" or "trace", found "verbose""#,
            ),
            (
                "runas = 0",
                r#"/etc/vhost-net-user/config.toml:1: key "runas": expected a string, USER or USER:GROUP, found 0"#,
            ),
            (
                "sandbox = false",
                r#"/etc/vhost-net-user/config.toml:1: key "sandbox": expected "on", "off" or "log", found false"#,
            ),
            (
                "max-flows = 0",
                r#"/etc/vhost-net-user/config.toml:1: key "max-flows": expected an integer, 1 to 1000000, found 0"#,
            ),
            (
                "max-flows = \"100\"",
                r#"/etc/vhost-net-user/config.toml:1: key "max-flows": expected an integer, 1 to 1000000, found "100""#,
            ),
            (
                "resolv-conf = \"\"",
                r#"/etc/vhost-net-user/config.toml:1: key "resolv-conf": expected a file name in a string, found """#,
            ),
            (
                "socket-mode = 660",
                r#"/etc/vhost-net-user/config.toml:1: key "socket-mode": expected an octal mode in a string, "0000" to "0777", found 660"#,
            ),
            (
                "socket-mode = \"0999\"",
                r#"/etc/vhost-net-user/config.toml:1: key "socket-mode": expected an octal mode in a string, "0000" to "0777", found "0999""#,
            ),
            (
                "socket-group = \"\"",
                r#"/etc/vhost-net-user/config.toml:1: key "socket-group": expected a group name or number in a string, found """#,
            ),
            (
                "socket-group = [\"kvm\"]",
                r#"/etc/vhost-net-user/config.toml:1: key "socket-group": expected a group name or number in a string, found ["kvm"]"#,
            ),
        ] {
            assert_eq!(err(text), want, "{text:?}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_errors_too() {
        let e = err("profile = \"slirp\"\nmap_gw = false\n");
        assert!(
            e.starts_with(
                r#"/etc/vhost-net-user/config.toml:2: key "map_gw": unknown key (known: profile, map-gw,"#
            ),
            "{e}"
        );
        let e = err("profile = \"slirp\"\n\n[net]\naddress = \"10.0.0.1\"\n");
        assert!(
            e.starts_with(r#"/etc/vhost-net-user/config.toml:3: key "net": unknown key"#),
            "{e}"
        );
        assert_eq!(
            err("profile = \"slirp\"\nprofile = \"passt\"\n"),
            r#"/etc/vhost-net-user/config.toml:2: key "profile": given twice"#
        );
        let e = err("profile = slirp\n");
        assert!(e.starts_with("/etc/vhost-net-user/config.toml:1: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn which_file_is_read() {
        let env = || Some(OsString::from("/srv/env.toml"));
        assert_eq!(
            chosen_path(Some(Path::new("/srv/opt.toml")), env()),
            (PathBuf::from("/srv/opt.toml"), true)
        );
        assert_eq!(
            chosen_path(None, env()),
            (PathBuf::from("/srv/env.toml"), true)
        );
        assert_eq!(
            chosen_path(None, Some(OsString::new())),
            (PathBuf::from(DEFAULT_PATH), false)
        );
        assert_eq!(
            chosen_path(None, None),
            (PathBuf::from(DEFAULT_PATH), false)
        );
    }

    #[test]
    fn a_missing_file_is_an_error_only_when_named() {
        let missing = std::env::temp_dir().join(format!("vnu-no-config-{}", std::process::id()));
        assert_eq!(load(&missing, false).unwrap(), None);
        let e = crate::error::error_chain(&load(&missing, true).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let missing = missing.to_str().unwrap();
        let mut a = args(&["--socket-path", "/tmp/s", "--config", missing]);
        assert!(apply_system_config(&mut a, None).is_err());
        let mut a = args(&["--socket-path", "/tmp/s"]);
        assert!(apply_system_config(&mut a, Some(missing.into())).is_err());
    }

    #[test]
    fn the_named_file_is_applied() {
        let file = std::env::temp_dir().join(format!("vnu-config-{}.toml", std::process::id()));
        std::fs::write(&file, "profile = \"passt\"\n").unwrap();
        let mut a = args(&["--socket-path", "/tmp/s"]);
        let applied = apply_system_config(&mut a, Some(file.clone().into()));
        std::fs::remove_file(&file).unwrap();
        applied.unwrap();
        assert_eq!(a.policy.profile, Some(ProfileArg::Passt));
    }
}
