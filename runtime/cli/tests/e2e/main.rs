//! End to end, as a lab runs phasebox: a `phasebox server` process (SQLite), two
//! `phasebox agent` processes with three simulated devices each, and the `phasebox` CLI
//! (testflinger-cli's verbs) submitting and following jobs. See `lab` for the set-up.
//!
//! * `jobs` — fifty jobs of ten kinds (noprovision, flash from a URL and from an attachment,
//!   failing tests, firmware, reservations, artifacts from the device and from a plugin, a
//!   declared secret, everything at once): results, output and artifacts of each; the secret's
//!   value nowhere.
//! * `cancel` — `phasebox cancel` during provision and during test.
//! * `faults` — an agent killed with SIGKILL mid-phase and restarted; the server stopped for
//!   30 s mid-job.
//! * `access` — a restricted queue refuses clients without rights.

mod access;
mod cancel;
mod faults;
mod jobs;
mod lab;
