//! # phasebox-jobspec
//!
//! The job model of phasebox, stage one: job text (YAML or JSON) → a typed, validated
//! [`JobSpec`]. No I/O and no plugin resolution happen here.
//!
//! The model is Testflinger's, wire-compatible (reference: `shared/reference/testflinger-wire.md`
//! §1): the same fields with the same types, defaults and validation as the Testflinger server's
//! marshmallow schema, including its looseness where it is loose (numeric strings for integer
//! fields, `"yes"` for booleans, `provision_data` typed by inference). YAML is read the way
//! the Testflinger CLI reads it (PyYAML, YAML 1.1 scalars).
//!
//! phasebox's additions are optional and live under a `phasebox` key inside each
//! `<phase>_data` (see [`phasebox`] and [`grants`]).
//!
//! ```
//! use phasebox_jobspec::{JobSpec, Phase};
//!
//! let job = JobSpec::from_yaml(
//!     "job_queue: rpi4\n\
//!      provision_data:\n  url: https://example.com/image.img.xz\n\
//!      test_data:\n  test_cmds: echo hi\n  phasebox:\n    timeout: 2h30m\n",
//! )?;
//! assert_eq!(job.job_queue, "rpi4");
//! let running: Vec<Phase> = job.phases().iter().filter(|p| p.runs()).map(|p| p.phase).collect();
//! assert_eq!(running, [Phase::Setup, Phase::Provision, Phase::Test, Phase::Cleanup]);
//! let timeout = job.phasebox(Phase::Test).and_then(|b| b.timeout).map(|d| d.as_secs());
//! assert_eq!(timeout, Some(9000));
//!
//! let err = JobSpec::from_yaml("job_queue: q\ntest_data:\n  test_cmds: [a, b]\n").unwrap_err();
//! assert_eq!(err.path(), "test_data.test_cmds");
//! assert!(err.to_string().starts_with("test_data.test_cmds at line 3, column 14:"));
//! # Ok::<(), phasebox_jobspec::Error>(())
//! ```
//!
//! Errors ([`Error`]) name the field path and, for YAML, the line and column where the
//! offending node starts; duplicate keys and malformed text are errors too.

#![deny(missing_docs)]

pub mod duration;
mod error;
mod fields;
mod json;
mod node;
mod phase;
pub mod phasebox;
mod provision;
mod spec;
mod yaml;

pub use duration::{Duration, DurationError};
pub use error::{Error, ErrorKind, Location};
pub use phase::{Phase, PhaseEntry, SkipReason};
pub use phasebox::{PhaseboxBlock, PluginRef};
/// What a phase asks to be granted (`<phase>_data.phasebox.grants`), in the grammar the
/// sandbox grants it in.
pub use phasebox_grants as grants;
pub use provision::{ProvisionData, ProvisionType};
pub use spec::{
    Attachment, AttachmentsStatus, DEFAULT_GLOBAL_TIMEOUT, DEFAULT_OUTPUT_TIMEOUT, DEFAULT_RESERVE_TIMEOUT, JobSpec,
    MAX_UNAUTHENTICATED_RESERVE_TIMEOUT, PhaseData, ReserveData, SecretMap, TestData, is_ssh_key_entry,
};
pub use yaml::MAX_EXPANDED_BYTES;
