//! The harness's one error type: a message carrying everything needed to see why (console
//! tails, logs), printed the same by `Display` and `Debug`.

use std::fmt;

/// A harness failure, with everything needed to see why (console tails, logs).
/// `Debug` prints the same text as `Display`, so `.unwrap()` and `.expect()` stay readable.
pub struct Error(String);

impl Error {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
