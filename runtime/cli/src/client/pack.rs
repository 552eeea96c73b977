//! Attachment packing for `submit` (Testflinger's CLI, reference §4.4): every attachment with
//! a `local` file in `provision_data`, `firmware_update_data` or `test_data` goes into one
//! tar.gz as `<phase>/<agent path>`; the submitted job keeps only `agent` (the path in the
//! archive below the phase directory) and `device`.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

/// The phases whose attachments the CLI packs.
const PACKED_PHASES: [&str; 3] = ["provision", "firmware_update", "test"];

/// Packs the `local` attachments of `job` (rewriting them in place) into a tar.gz; `None`
/// when there are none. Relative `local` paths start from `reference`.
pub fn pack_attachments(job: &mut Value, reference: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    builder.follow_symlinks(true);
    let mut packed = 0usize;
    for phase in PACKED_PHASES {
        let Some(list) = job.get_mut(format!("{phase}_data")).and_then(|d| d.get_mut("attachments")) else {
            continue;
        };
        let Some(list) = list.as_array_mut() else { bail!("{phase}_data.attachments must be a list") };
        for (i, attachment) in list.iter_mut().enumerate() {
            let Some(obj) = attachment.as_object_mut() else { continue };
            let Some(local) = obj.get("local").and_then(Value::as_str).map(str::to_owned) else { continue };
            let mut local_path = PathBuf::from(&local);
            if local_path.is_relative() {
                local_path = reference.join(local_path);
            }
            let local_path = std::fs::canonicalize(&local_path).with_context(|| {
                format!("{phase}_data.attachments[{i}]: local file {} cannot be read", local_path.display())
            })?;
            let agent_path = match obj.get("agent").and_then(Value::as_str) {
                Some(agent) => strip_root(Path::new(agent)),
                None => local_path
                    .strip_prefix(reference)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| PathBuf::from(local_path.file_name().unwrap_or_default())),
            };
            if agent_path.as_os_str().is_empty() || agent_path.components().any(|c| matches!(c, Component::ParentDir)) {
                bail!(
                    "{phase}_data.attachments[{i}]: the agent path {:?} must name a file inside the attachments \
                     directory (no `..`)",
                    agent_path.display()
                );
            }
            let archive_path = Path::new(phase).join(&agent_path);
            let meta = std::fs::metadata(&local_path).with_context(|| format!("reading {}", local_path.display()))?;
            if meta.is_dir() {
                builder.append_dir_all(&archive_path, &local_path)
            } else {
                builder.append_path_with_name(&local_path, &archive_path)
            }
            .with_context(|| format!("packing {} as {}", local_path.display(), archive_path.display()))?;
            obj.insert("agent".into(), Value::String(agent_path.to_string_lossy().into_owned()));
            obj.remove("local");
            packed += 1;
        }
    }
    if packed == 0 {
        return Ok(None);
    }
    let encoder = builder.into_inner().context("finishing the attachments archive")?;
    Ok(Some(encoder.finish().context("compressing the attachments archive")?))
}

/// `/a/b` → `a/b`.
fn strip_root(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_) | Component::CurDir)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    #[test]
    fn locals_are_packed_under_their_phase_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.sh"), "echo hi\n").unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/blob.bin"), [1u8, 2, 3]).unwrap();
        let mut job = json!({
            "job_queue": "q",
            "test_data": {"test_cmds": "x", "attachments": [
                {"local": "script.sh"},
                {"local": "data", "agent": "/opt/data", "device": "/home/ubuntu/data"},
                {"agent": "already/there"}
            ]}
        });
        let archive = pack_attachments(&mut job, &std::fs::canonicalize(dir.path()).unwrap()).unwrap().unwrap();
        assert_eq!(
            job["test_data"]["attachments"],
            json!([{"agent": "script.sh"}, {"agent": "opt/data", "device": "/home/ubuntu/data"}, {"agent": "already/there"}])
        );
        let mut names = Vec::new();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "test/script.sh" {
                let mut s = String::new();
                entry.read_to_string(&mut s).unwrap();
                assert_eq!(s, "echo hi\n");
            }
            names.push(name);
        }
        assert!(names.contains(&"test/script.sh".to_owned()), "{names:?}");
        assert!(names.contains(&"test/opt/data/blob.bin".to_owned()), "{names:?}");
    }

    #[test]
    fn no_locals_no_archive_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "x"}]}});
        assert!(pack_attachments(&mut job, dir.path()).unwrap().is_none());
        let mut job = json!({"job_queue": "q", "provision_data": {"attachments": [{"local": "nope.img"}]}});
        let err = pack_attachments(&mut job, dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("provision_data.attachments[0]") && format!("{err:#}").contains("nope.img")
        );
        let mut job =
            json!({"job_queue": "q", "test_data": {"attachments": [{"local": "/etc/hostname", "agent": "../x"}]}});
        assert!(pack_attachments(&mut job, dir.path()).is_err());
    }
}
