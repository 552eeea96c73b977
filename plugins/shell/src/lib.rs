//! `shell`: runs a Testflinger job's `test_cmds` on the device under test, with Testflinger's
//! meaning.
//!
//! In Testflinger, `test_cmds` run on the agent host, in the job's directory, and reach the
//! device with `ssh`/`scp` to `$DEVICE_IP`. phasebox never runs a job's commands on the agent
//! host, so this plugin reproduces that world on the device itself, through the `exec` handle
//! (the plugin never learns the device's address or key):
//!
//! - each job gets its own working directory on the device, `~/phasebox-jobs/<job id>/work`,
//!   created empty (mode 0700) before the commands and removed after them, whatever happened, so
//!   two jobs on one device never see each other's files;
//! - the phase's attachments (the job's `attachments/test/…`, mounted read-only at
//!   `/attachments`) are copied to `attachments/test/…` there, Testflinger's layout;
//! - the commands are written to a script (`#!/bin/bash` prepended unless they start with `#!`,
//!   as Testflinger's device connector does) and run in that directory with `DEVICE_IP` (the
//!   device fact `device_ip`, or `127.0.0.1`: the device as it sees itself) and `agent_id` (the
//!   device's name) in the environment;
//! - `ssh` and `scp` come first on `PATH` as small wrappers (`ssh.sh`, `scp.sh`): `ssh [opts]
//!   [user@]$DEVICE_IP CMD` runs CMD right there, `scp` between the working directory and
//!   `$DEVICE_IP:` is a local copy, and any other host goes to the device's own ssh/scp;
//! - files the commands leave in `artifacts/` become the job's artifacts when the phase is
//!   granted `/artifacts` (up to `MAX_ARTIFACTS` files, each within the device's copy limit).
//!
//! What does not carry over: tools the script expects on the agent host (a snap of the lab's,
//! the agent's own files) are not there; the job installs what it needs on the device or ships
//! it as an attachment. The secrets named in `test_data.secrets` become environment variables
//! of the commands only: the plugin passes their names, the host fills in the values.
//!
//! Exit status 0 passes; any other status is a test failure; a device that cannot be reached is
//! an infrastructure error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use phasebox_plugin_sdk::{self as sdk, DeviceError, Failure, Guest, Outcome, PhaseContext, results::Status};
use serde::Deserialize;

/// The part of `test_data` this plugin reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct TestData {
    /// The commands, one shell script.
    test_cmds: Option<String>,
    /// Environment variable name → secret path; only the names matter here.
    secrets: BTreeMap<String, serde_json::Value>,
}

/// Most files copied back from the job's `artifacts/` on the device.
const MAX_ARTIFACTS: usize = 1000;

/// Where on the device a job's files live, relative to the login's home.
const JOBS_DIR: &str = "phasebox-jobs";

/// The wrappers that make `ssh`/`scp` to `$DEVICE_IP` local.
const SSH_WRAPPER: &str = include_str!("ssh.sh");
const SCP_WRAPPER: &str = include_str!("scp.sh");

struct Shell;

impl Guest for Shell {
    fn run(ctx: PhaseContext) -> Result<Outcome, Failure> {
        let data: TestData = sdk::ctx_data(&ctx)?;
        let Some(cmds) = data.test_cmds.filter(|c| !c.trim().is_empty()) else {
            return Err(Failure::JobError("test_data.test_cmds is missing or empty".into()));
        };
        let names: Vec<String> = data.secrets.keys().cloned().collect();
        let dir = JobDir::new(&ctx.job_id);
        dir.prepare(&cmds).map_err(infra)?;
        let result = run_in(&ctx, &dir, &names);
        // Whatever happened, the next job on this device finds nothing of this one.
        if let Err(e) = dir.remove() {
            sdk::log::warn(&format!("removing the job's directory on the device failed: {}", sdk::describe(&e)));
        }
        result
    }
}

fn run_in(ctx: &PhaseContext, dir: &JobDir, secret_names: &[String]) -> Result<Outcome, Failure> {
    if std::path::Path::new("/attachments").is_dir() {
        dir.copy_attachments(std::path::Path::new("/attachments")).map_err(infra)?;
    }
    let env = vec![
        ("DEVICE_IP".to_owned(), sdk::fact(ctx, "device_ip").unwrap_or("127.0.0.1").to_owned()),
        ("agent_id".to_owned(), sdk::fact(ctx, "name").unwrap_or_default().to_owned()),
    ];
    let started = Instant::now();
    // A zero timeout means the phase's own limit, which the host enforces.
    let status =
        sdk::exec::run_streaming(&dir.command(), &env, secret_names, Duration::ZERO, |_, _| {}).map_err(infra)?;
    let took = started.elapsed();
    if std::path::Path::new("/artifacts").is_dir() {
        dir.collect_artifacts();
    }
    if status == 0 {
        sdk::report_case("shell", "test_cmds", Status::Pass, took, None);
        Ok(Outcome { summary: "test_cmds exited 0".into() })
    } else {
        let message = format!("test_cmds exited with status {status}");
        sdk::report_case("shell", "test_cmds", Status::Fail, took, Some(&message));
        Err(Failure::TestFailure(message))
    }
}

/// One job's directory on the device: `bin/` (the wrappers), `tf_cmd_script`, and `work/`,
/// where the commands run.
struct JobDir {
    /// Relative to the login's home, already safe to use unquoted in a shell command.
    root: String,
}

impl JobDir {
    fn new(job_id: &str) -> Self {
        // Job ids are UUIDs; anything else is reduced to characters that are safe in a path and
        // a shell word, so no id can name a directory outside JOBS_DIR.
        let safe: String =
            job_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let safe = if safe.is_empty() { "job".to_owned() } else { safe };
        Self { root: format!("{JOBS_DIR}/{safe}") }
    }

    /// Creates the directory afresh (removing what a crashed earlier run of the same job left)
    /// and writes the wrappers and the script.
    fn prepare(&self, cmds: &str) -> Result<(), DeviceError> {
        let root = &self.root;
        self.quiet(&format!("rm -rf -- {root} && mkdir -p {root}/bin {root}/work && chmod 700 {root}"))?;
        sdk::exec::copy_to(&format!("{root}/bin/ssh"), SSH_WRAPPER.as_bytes())?;
        sdk::exec::copy_to(&format!("{root}/bin/scp"), SCP_WRAPPER.as_bytes())?;
        sdk::exec::copy_to(&format!("{root}/tf_cmd_script"), script(cmds).as_bytes())?;
        self.quiet(&format!("chmod 755 {root}/bin/ssh {root}/bin/scp {root}/tf_cmd_script"))
    }

    /// The command that runs the script in `work/` with the wrappers first on `PATH`.
    fn command(&self) -> String {
        let root = &self.root;
        format!("cd {root}/work && PATH=\"$HOME/{root}/bin:$PATH\" exec ../tf_cmd_script")
    }

    /// Copies every regular file under `from` to `work/attachments/test/`, keeping relative paths.
    fn copy_attachments(&self, from: &std::path::Path) -> Result<(), DeviceError> {
        let mut files = Vec::new();
        walk(from, from, &mut files);
        let dest = format!("{}/work/attachments/test", self.root);
        let mut dirs: Vec<String> = files
            .iter()
            .map(|rel| match rel.rsplit_once('/') {
                Some((parent, _)) => format!("{dest}/{parent}"),
                None => dest.clone(),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        if dirs.is_empty() {
            dirs.push(dest.clone());
        }
        let quoted: Vec<String> = dirs.iter().map(|d| shell_word(d)).collect();
        self.quiet(&format!("mkdir -p {}", quoted.join(" ")))?;
        for rel in &files {
            let data = match std::fs::read(from.join(rel)) {
                Ok(data) => data,
                Err(e) => {
                    sdk::log::warn(&format!("attachment {rel:?}: {e}"));
                    continue;
                }
            };
            sdk::exec::copy_to(&format!("{dest}/{rel}"), &data)?;
        }
        Ok(())
    }

    /// Copies the files under `work/artifacts/` on the device to `/artifacts`, keeping their
    /// relative paths. Problems are logged, not fatal: the commands' own verdict stands. The
    /// listing goes through a file, so it does not show in the phase's output.
    fn collect_artifacts(&self) {
        let root = &self.root;
        let list = format!("{root}/artifacts.list");
        let listed = self.quiet(&format!(
            "cd {root}/work && {{ [ -d artifacts ] && find artifacts -type f | head -n {MAX_ARTIFACTS}; true; }} > ../artifacts.list"
        ));
        let listing = match listed.and_then(|()| sdk::exec::copy_from(&list)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return sdk::log::warn(&format!("listing artifacts on the device failed: {}", sdk::describe(&e))),
        };
        let mut copied = 0;
        for remote in listing.lines().filter(|l| !l.is_empty()) {
            // `find artifacts` prints paths under artifacts/; refuse anything that could leave it.
            let Some(rel) = remote.strip_prefix("artifacts/") else { continue };
            if rel.split('/').any(|part| part.is_empty() || part == "..") {
                continue;
            }
            let local = format!("/artifacts/{rel}");
            let result = sdk::exec::copy_from(&format!("{root}/work/{remote}"))
                .map_err(|e| sdk::describe(&e))
                .and_then(|data| {
                    if let Some(parent) = std::path::Path::new(&local).parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&local, data).map_err(|e| e.to_string())
                });
            match result {
                Ok(()) => copied += 1,
                Err(why) => sdk::log::warn(&format!("artifact {remote:?}: {why}")),
            }
        }
        if copied > 0 {
            sdk::log::debug(&format!("copied {copied} artifact(s) from the device"));
        }
    }

    fn remove(&self) -> Result<(), DeviceError> {
        self.quiet(&format!("rm -rf -- {}", self.root))
    }

    /// Runs a bookkeeping command that prints nothing when it works; a failure is an error with
    /// what it printed.
    fn quiet(&self, command: &str) -> Result<(), DeviceError> {
        let out = sdk::exec::run_captured(command, &[], Duration::from_secs(60))?;
        if out.status == 0 {
            Ok(())
        } else {
            Err(DeviceError::Failed(format!("`{command}` exited with {}: {}", out.status, out.stderr_text())))
        }
    }
}

/// The script Testflinger's device connector would write: the commands, with `#!/bin/bash`
/// in front unless they name their own interpreter.
fn script(cmds: &str) -> String {
    if cmds.starts_with("#!") { cmds.to_owned() } else { format!("#!/bin/bash\n{cmds}") }
}

/// `value` as one single-quoted shell word.
fn shell_word(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The relative paths of the regular files below `dir` (symlinks are not followed).
fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() {
            walk(base, &path, out);
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(base)
            && let Some(rel) = rel.to_str()
        {
            out.push(rel.to_owned());
        }
    }
}

/// A device that cannot run the commands is the lab's problem, not the job's.
fn infra(e: DeviceError) -> Failure {
    Failure::InfraError(match e {
        DeviceError::NotConfigured => "the device has no command execution configured".into(),
        DeviceError::TimedOut => "running test_cmds on the device timed out".into(),
        DeviceError::Failed(m) => format!("running test_cmds on the device failed: {m}"),
    })
}

sdk::export_phase!(Shell);

// The wrappers are shell scripts: their tests run natively (`cargo test --target <host>`).
#[cfg(all(test, unix))]
mod tests {
    //! The wrappers, run by the machine's `sh` as the device would run them.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::{JobDir, SCP_WRAPPER, SSH_WRAPPER, script};

    /// A job directory as `prepare` lays it out, plus a stand-in for the device's real ssh/scp
    /// (later on PATH) that only says it was called.
    struct Layout {
        root: PathBuf,
    }

    impl Layout {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("phasebox-shell-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for dir in ["home", "bin", "work", "real"] {
                std::fs::create_dir_all(root.join(dir)).unwrap();
            }
            write_exec(&root.join("bin/ssh"), SSH_WRAPPER);
            write_exec(&root.join("bin/scp"), SCP_WRAPPER);
            write_exec(&root.join("real/ssh"), "#!/bin/sh\necho \"real ssh $*\"\n");
            write_exec(&root.join("real/scp"), "#!/bin/sh\necho \"real scp $*\"\n");
            Self { root }
        }

        /// Runs `script` in `work/` as the plugin does; returns (status, stdout).
        fn run(&self, script: &str) -> (i32, String) {
            let path =
                format!("{}:{}:/usr/bin:/bin", self.root.join("bin").display(), self.root.join("real").display());
            let out = Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .current_dir(self.root.join("work"))
                .env_clear()
                .env("PATH", path)
                .env("HOME", self.root.join("home"))
                .env("DEVICE_IP", "10.0.0.5")
                .output()
                .unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }

    impl Drop for Layout {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn write_exec(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn ssh_to_the_device_runs_the_command_here() {
        let layout = Layout::new("ssh-here");
        let (status, out) = layout.run(
            "ssh ubuntu@$DEVICE_IP 'echo one; pwd'; ssh -t -p 22 -o StrictHostKeyChecking=no $DEVICE_IP echo two three",
        );
        assert_eq!(status, 0, "{out}");
        // In the login's home, where sshd starts a command.
        let home = layout.root.join("home");
        assert_eq!(out, format!("one\n{}\ntwo three\n", home.display()));
        // The command's status is ssh's status, as with a real ssh.
        assert_eq!(layout.run("ssh -tt ubuntu@$DEVICE_IP exit 3").0, 3);
        // Without a command, ssh reads the commands from its input.
        assert_eq!(layout.run("echo 'echo from stdin' | ssh $DEVICE_IP").1, "from stdin\n");
    }

    #[test]
    fn ssh_to_another_host_goes_to_the_real_ssh() {
        let layout = Layout::new("ssh-elsewhere");
        let (status, out) = layout.run("ssh -p 2222 ubuntu@10.0.0.6 uname -a");
        assert_eq!((status, out.as_str()), (0, "real ssh -p 2222 ubuntu@10.0.0.6 uname -a\n"));
    }

    #[test]
    fn scp_with_the_device_is_a_local_copy() {
        let layout = Layout::new("scp-here");
        let (status, out) = layout.run(
            "echo hello > ~/made-there && mkdir -p artifacts \
             && scp -o StrictHostKeyChecking=no ubuntu@$DEVICE_IP:$HOME/made-there artifacts/x && cat artifacts/x \
             && mkdir -p d/e && echo deep > d/e/f && scp -r d $DEVICE_IP:copied && cat ~/copied/e/f",
        );
        assert_eq!((status, out.as_str()), (0, "hello\ndeep\n"));
    }

    #[test]
    fn scp_naming_another_host_goes_to_the_real_scp() {
        let layout = Layout::new("scp-elsewhere");
        let (status, out) = layout.run("scp -P 22 file ubuntu@10.0.0.6:/tmp/");
        assert_eq!((status, out.as_str()), (0, "real scp -P 22 file ubuntu@10.0.0.6:/tmp/\n"));
    }

    #[test]
    fn job_ids_cannot_name_a_directory_outside_the_jobs_directory() {
        assert_eq!(
            JobDir::new("7e6b7c1e-5f9a-4d6c-9a53-1c1f0c2b9e10").root,
            "phasebox-jobs/7e6b7c1e-5f9a-4d6c-9a53-1c1f0c2b9e10"
        );
        assert_eq!(JobDir::new("../../etc; rm -rf /").root, "phasebox-jobs/______etc__rm_-rf__");
        assert_eq!(JobDir::new("").root, "phasebox-jobs/job");
    }

    #[test]
    fn the_script_gets_bash_unless_it_names_its_interpreter() {
        assert_eq!(script("echo hi\n"), "#!/bin/bash\necho hi\n");
        assert_eq!(script("#!/bin/sh\necho hi\n"), "#!/bin/sh\necho hi\n");
    }
}
