//! # phasebox-config
//!
//! What every phasebox configuration file has in common, in one place, so the agent's, the
//! runner's, the device's, the server's and the client's files follow one set of rules:
//!
//! - [`units`]: one grammar for durations (`90`, `"1.5s"`, `"2h30m"`, `"500ms"`) and one for
//!   sizes (`"64MiB"`), with serde adapters. Job files keep Testflinger's own duration grammar
//!   (in `phasebox-jobspec`), because they are Testflinger's wire format, not ours.
//! - [`mod@load`]: reading a TOML file into a type whose unknown keys are errors, with the file named
//!   in every error and relative paths taken from the file's directory ([`Rebase`]).
//! - [`secret_file`]: reading a file that holds a secret only when nobody but its owner can read
//!   or change it, and writing one with mode 0600, atomically.
//!
//! The crate depends on no other phasebox crate.

#![deny(missing_docs)]

pub mod load;
pub mod secret_file;
pub mod units;

pub use load::{ConfigError, Rebase, load, parse, rebase};
