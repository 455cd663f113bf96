//! The profile's name, on its own so that the error type and each profile can name it without
//! importing the pipeline that uses them.

/// How addresses in the configuration become the guest's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// QEMU slirp's derivation (an address names the network).
    #[default]
    Slirp,
    /// passt's reading (the address is the guest's own), minus passt's broken cases.
    Passt,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Slirp => "slirp",
            Profile::Passt => "passt",
        })
    }
}
