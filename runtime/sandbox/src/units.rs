//! Sizes (`64MiB`) and durations (`2h30m`) in manifests and policies: the grammar every phasebox
//! configuration shares, defined in `phasebox-config` and re-exported here for the sandbox's
//! users.

pub use phasebox_config::units::{
    format_duration, format_size, parse_duration, parse_size, serde_duration, serde_size,
};
