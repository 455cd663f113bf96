//! The one error type of the policy layer.
//!
//! A configuration the user got wrong ends the daemon with one line and exit status 2, so every
//! variant's `Display` is a single line that names the user's own words: the element and
//! attribute as written in the XML, the `-netdev user` option, or the command-line option.
//! The underlying I/O or XML error is kept as `source` and also spelled out in the line,
//! because the binary prints only `Display`.

use std::path::PathBuf;

use crate::Profile;

/// Why a configuration was not turned into a plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file named on the command line could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The libvirt XML is not well-formed.
    #[error("{origin}: not well-formed XML")]
    XmlSyntax {
        origin: String,
        #[source]
        source: roxmltree::Error,
    },
    /// A value that cannot be used as written; `subject` quotes it as the user wrote it.
    #[error("{subject}: {reason}")]
    Invalid { subject: String, reason: String },
    /// Front ends or options that cannot be combined.
    #[error("{0}")]
    Conflict(String),
    /// A well-formed configuration that the chosen profile refuses because the guest it gives
    /// would be broken (the seed's symptoms).
    #[error("--profile {profile} refuses {subject}: {reason}")]
    Refused {
        profile: Profile,
        subject: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(subject: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(
        profile: Profile,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Refused {
            profile,
            subject: subject.into(),
            reason: reason.into(),
        }
    }
}
