//! Errors of the simulated machine, each naming what the user must fix.

use thiserror::Error;

/// Everything that can stop a machine from being built or run.
#[derive(Debug, Error)]
pub enum SimError {
    /// A profile failed to parse or validate.
    #[error("profile {origin}: {message}")]
    Profile {
        /// File or built-in name.
        origin: String,
        /// What is wrong (the TOML parser's message includes line and column).
        message: String,
    },
    /// A profile name that is neither built in nor a file.
    #[error(
        "unknown profile '{name}' (built-in profiles: {known}; or give a path to a TOML file)"
    )]
    UnknownProfile {
        /// The name given.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// A guest image that cannot be loaded.
    #[error("guest image {origin}: {message}")]
    Image {
        /// Where the image came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A machine configuration value out of range.
    #[error("machine configuration: {0}")]
    Config(String),
}
