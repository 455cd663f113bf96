//! Where passt mode's logs go: `--log-file` (kept under `--log-size`, 1 MiB by default, as
//! passt keeps it), standard error in the foreground, syslog in the background. Every
//! destination is opened before the process confines itself; writing to it afterwards needs
//! no new rights (a write, `send` on a connected socket, and `ftruncate` for the log file's
//! rotation on a descriptor already open).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::sys;

/// passt's default `--log-size`.
pub const DEFAULT_LOG_SIZE: u64 = 1 << 20;
/// The smallest `--log-size` passt takes (5 × 8 KiB).
pub const MIN_LOG_SIZE: u64 = 40_960;

/// Where log records go.
#[derive(Debug)]
pub enum Sink {
    Stderr,
    File(Mutex<LogFile>),
    /// A datagram socket connected to /dev/log; `None` when there is no syslog to talk to.
    Syslog(Option<UnixDatagram>),
}

/// Opens where logs go: the log file (created 0600, never through a symbolic link, at most
/// `limit` bytes), else standard error in the foreground, else syslog. The `Err` is the
/// reason the log file could not be opened.
pub fn open_sink(log_file: Option<&Path>, limit: u64, foreground: bool) -> std::io::Result<Sink> {
    if let Some(path) = log_file {
        return Ok(Sink::File(Mutex::new(LogFile::create(path, limit)?)));
    }
    if foreground {
        return Ok(Sink::Stderr);
    }
    // Without a syslog, logs go nowhere, as passt's do (said at debug level once logging is
    // up, so that a caller showing our standard error is not told at every start).
    let socket = UnixDatagram::unbound().and_then(|s| s.connect("/dev/log").map(|()| s));
    Ok(Sink::Syslog(socket.ok()))
}

/// A log file that never grows past its limit: when a record would not fit, the oldest
/// records go (whole lines, the oldest quarter of the limit at least, so that rotation is
/// rare), and the newest stay at the start of the file, as passt's `--log-size` does.
#[derive(Debug)]
pub struct LogFile {
    file: File,
    len: u64,
    limit: u64,
}

impl LogFile {
    /// Creates (truncates) `path` as the pcap file is (mode 0600, never through a symbolic
    /// link, close-on-exec), for reading too.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<LogFile> {
        Ok(LogFile {
            file: netcore::capture::create_private_file_rw(path)?,
            len: 0,
            limit: limit.max(1),
        })
    }

    /// Appends `text`, making room first if needed. A record longer than the limit keeps
    /// only its end.
    pub fn append(&mut self, text: &[u8]) -> std::io::Result<()> {
        let text = &text[text.len().saturating_sub(self.limit as usize)..];
        let n = text.len() as u64;
        if self.len + n > self.limit {
            self.make_room(n)?;
        }
        self.file.write_all_at(text, self.len)?;
        self.len += n;
        Ok(())
    }

    /// Drops the oldest lines so that `n` more bytes fit.
    fn make_room(&mut self, n: u64) -> std::io::Result<()> {
        let drop = (self.len + n)
            .saturating_sub(self.limit)
            .max(self.limit / 4);
        let mut kept = Vec::new();
        if drop < self.len {
            kept = vec![0u8; (self.len - drop) as usize];
            self.file.read_exact_at(&mut kept, drop)?;
            // From the first whole line: `drop` may fall in the middle of one.
            let mut previous = [b'\n'];
            if drop > 0 {
                self.file.read_exact_at(&mut previous, drop - 1)?;
            }
            if previous[0] != b'\n' {
                let start = kept
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(kept.len(), |i| i + 1);
                kept.drain(..start);
            }
        }
        self.file.write_all_at(&kept, 0)?;
        self.file.set_len(kept.len() as u64)?;
        self.len = kept.len() as u64;
        Ok(())
    }
}

/// While the parent waits (until the child is ready), records are copied to standard error,
/// which the caller reads.
static ECHO_STDERR: AtomicBool = AtomicBool::new(false);

/// Copies records to standard error as well (`true`), or stops.
pub fn echo_to_stderr(on: bool) {
    ECHO_STDERR.store(on, Ordering::Relaxed);
}

/// passt mode's logger.
#[derive(Debug)]
pub struct PasstLogger {
    pub level: log::LevelFilter,
    pub sink: Sink,
    pub start: Instant,
    /// Seconds east of UTC, for syslog's local timestamps.
    pub utc_offset: i64,
}

/// Makes `sink` the destination of every record at `level` or above.
pub fn install(sink: Sink, level: log::LevelFilter) {
    let logger = PasstLogger {
        level,
        sink,
        start: Instant::now(),
        utc_offset: sys::utc_offset_now(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

impl log::Log for PasstLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{}: {}", level_word(record.level()), record.args());
        let echo = ECHO_STDERR.load(Ordering::Relaxed);
        match &self.sink {
            Sink::Stderr => eprintln!("passt: {line}"),
            Sink::File(file) => {
                let t = self.start.elapsed();
                let text = format!("{}.{:04}: {line}\n", t.as_secs(), t.subsec_micros() / 100);
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                let _ = file.append(text.as_bytes());
            }
            Sink::Syslog(socket) => {
                if let Some(socket) = socket {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let datagram = syslog_datagram(
                        record.level(),
                        now + self.utc_offset,
                        std::process::id(),
                        &line,
                    );
                    let _ = socket.send(datagram.as_bytes());
                }
            }
        }
        if echo && !matches!(self.sink, Sink::Stderr) {
            eprintln!("passt: {line}");
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn level_word(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// One RFC 3164 message as the C library's syslog() sends it to /dev/log: facility daemon,
/// the level's severity, the local time (`local_secs`: seconds since the epoch, shifted by
/// the zone's offset), tag `passt[PID]`.
pub fn syslog_datagram(level: log::Level, local_secs: i64, pid: u32, text: &str) -> String {
    const DAEMON: u8 = 3;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let severity: u8 = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    let days = local_secs.div_euclid(86_400);
    let secs = local_secs.rem_euclid(86_400);
    let (_, month, day) = civil_from_days(days);
    format!(
        "<{}>{} {day:>2} {:02}:{:02}:{:02} passt[{pid}]: {text}",
        DAEMON * 8 + severity,
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
    )
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of a day counted from
/// 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Eras of 400 years (146097 days) starting on 0000-03-01, so that the leap day is last.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
