//! Whether smb.conf's `path=` line can name a directory: Samba reads that line its own way,
//! and a path it would read differently must be refused rather than share another directory.

use std::path::PathBuf;

use crate::error::ConfigError;

/// `text` with its line breaks spelled `\n` and `\r`, so that an error stays one line.
pub(super) fn one_line(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}

/// Why smbd would not share the directory `path` when smb.conf says `path=PATH`, if it would not.
pub(super) fn smb_conf_trouble(path: &[u8]) -> Option<&'static str> {
    if path.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Some("contains a line break, which would cut smb.conf's line path=DIR");
    }
    if path.contains(&b'%') {
        return Some(
            "contains '%', which Samba expands in path= (%u, %m, ...), so smbd would share \
             another directory",
        );
    }
    // Samba drops trailing blanks of a value and joins a line ending in '\' to the next.
    if path
        .last()
        .is_some_and(|&b| b.is_ascii_whitespace() || b == b'\x0b' || b == b'\\')
    {
        return Some(
            "ends in whitespace or a backslash, which smb.conf drops or reads as a line \
             continuation, so smbd would share another directory",
        );
    }
    None
}

/// `abs` if smb.conf can hold it: a relative `smb=` takes the current directory's name into
/// smb.conf too.
pub(super) fn smb_absolute_checked(shown: String, abs: PathBuf) -> Result<PathBuf, ConfigError> {
    if abs.to_str().is_none() {
        return Err(ConfigError::invalid(
            shown,
            format!(
                "its absolute path {} is not UTF-8, which smb.conf (written as UTF-8) cannot name",
                one_line(&abs.display().to_string())
            ),
        ));
    }
    match smb_conf_trouble(abs.as_os_str().as_encoded_bytes()) {
        Some(why) => Err(ConfigError::invalid(
            shown,
            format!(
                "its absolute path {} {why}",
                one_line(&abs.display().to_string())
            ),
        )),
        None => Ok(abs),
    }
}
