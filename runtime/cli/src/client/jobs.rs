//! `submit`, `status`, `results`, `show`, `artifacts`, `cancel`, `reserve`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use phasebox_client::{Backoff, Client, ClientError};
use serde_json::{Value, json};

use super::{explain, pack, poll, pretty};
use crate::Verdict;

/// Options of `submit`.
pub struct SubmitOptions {
    pub poll: bool,
    pub quiet: bool,
    pub wait_for_available_agents: bool,
    pub attachments_relative_to: Option<PathBuf>,
    pub interval: f64,
}

/// `submit FILE|-`.
pub async fn submit(client: &Client, filename: &str, opts: &SubmitOptions) -> anyhow::Result<Verdict> {
    let (text, reference) = if filename == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the job from stdin")?;
        (text, std::env::current_dir().context("the current directory")?)
    } else {
        let path = Path::new(filename);
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read job file {filename}"))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        (text, std::fs::canonicalize(dir).with_context(|| format!("the directory of {filename}"))?)
    };
    let reference = match &opts.attachments_relative_to {
        Some(dir) => {
            std::fs::canonicalize(dir).with_context(|| format!("--attachments-relative-to {}", dir.display()))?
        }
        None => reference,
    };
    // Validated here first, so a mistake is reported with its line and column before anything
    // is sent.
    let spec = phasebox_jobspec::JobSpec::parse(&text).with_context(|| format!("invalid job in {filename}"))?;
    let mut job = spec.to_json();
    let job_id = submit_job(client, &mut job, &reference, opts.wait_for_available_agents).await?;
    if opts.quiet {
        println!("{job_id}");
    } else {
        println!("Job submitted successfully!");
        println!("job_id: {job_id}");
    }
    if opts.poll {
        return poll::follow(client, &job_id, &poll::Follow::new(opts.interval)).await;
    }
    Ok(Verdict::Success)
}

/// Checks that the queue has an agent online, packs and submits the job, uploads its
/// attachments (cancelling the job if that fails). Returns the job id.
async fn submit_job(client: &Client, job: &mut Value, reference: &Path, wait: bool) -> anyhow::Result<String> {
    let queue =
        job.get("job_queue").and_then(Value::as_str).context("Error: Queue was not specified in job")?.to_owned();
    let excluded: Vec<String> = job
        .get("exclude_agents")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    check_online_agents(client, &queue, &excluded, wait).await?;

    let archive = pack::pack_attachments(job, reference)?;
    let job_id = client.submit_job(job).await.map_err(|e| match e {
        ClientError::Status { status: 400, .. } => anyhow::Error::new(e)
            .context("The job you submitted contained bad data or bad formatting, or did not specify a job_queue."),
        other => explain(other, None).context(format!("submitting the job to queue {queue:?}")),
    })?;
    if let Some(archive) = archive
        && let Err(e) = upload_with_retries(client, &job_id, archive).await
    {
        let _ = client.cancel_job(&job_id).await;
        return Err(e.context(format!("Job {job_id} submitted and cancelled: failed to submit attachments")));
    }
    Ok(job_id)
}

async fn upload_with_retries(client: &Client, job_id: &str, archive: Vec<u8>) -> anyhow::Result<()> {
    const TRIES: u32 = 3;
    // testflinger-cli's schedule: 10 s, then 1.3 times longer each time.
    let mut retry = Backoff::new(Duration::from_secs(10), Duration::from_secs(60)).factor(1.3);
    loop {
        match client.upload_attachments(job_id, archive.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && retry.failures() + 1 < TRIES => {
                let wait = retry.next_delay();
                eprintln!("uploading the attachments failed ({e}); trying again in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// testflinger-cli's agents check: the queue must exist (404 otherwise) and have an agent that
/// is not offline and not excluded, unless `wait`.
async fn check_online_agents(client: &Client, queue: &str, excluded: &[String], wait: bool) -> anyhow::Result<()> {
    let agents = match client.queue_agents(queue).await {
        Ok(a) => a,
        Err(e @ ClientError::NotFound { .. }) => return Err(anyhow::Error::new(e)),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the agents of the queue");
            Vec::new()
        }
    };
    let name = |a: &Value| a.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let online = |a: &&Value| a.get("state").and_then(Value::as_str) != Some("offline");
    if agents.iter().filter(online).any(|a| !excluded.contains(&name(a))) {
        return Ok(());
    }
    let message = format!("No online agents available for queue {queue}.");
    if wait {
        eprintln!("WARNING: {message} Waiting for agents to become available...");
        return Ok(());
    }
    let mut message = format!(
        "ERROR: {message} If you want to wait for agents to become available, use the --wait-for-available-agents option."
    );
    let online_excluded: Vec<String> =
        agents.iter().filter(online).map(name).filter(|n| excluded.contains(n)).collect();
    if !online_excluded.is_empty() {
        message.push_str(
            "\nAdditionally, the following agents ARE online, but they have been excluded from running this job in \
             the job definition file:",
        );
        for n in online_excluded {
            message.push_str(&format!("\n\t- {n}"));
        }
    }
    bail!(message)
}

/// `status JOB`: prints `job_state`.
pub async fn status(client: &Client, job_id: &str) -> anyhow::Result<Verdict> {
    let state = client.job_state(job_id).await.map_err(|e| no_data(e, job_id, "No data found for that job id."))?;
    println!("{state}");
    Ok(Verdict::Success)
}

/// `results JOB`: the results JSON.
pub async fn results(client: &Client, job_id: &str) -> anyhow::Result<Verdict> {
    let r = client.get_results(job_id).await.map_err(|e| no_data(e, job_id, "No results found for that job id."))?;
    println!("{}", pretty(&r));
    Ok(Verdict::Success)
}

/// `show JOB`: the job as submitted.
pub async fn show(client: &Client, job_id: &str) -> anyhow::Result<Verdict> {
    let job = client.get_job(job_id).await.map_err(|e| no_data(e, job_id, "No data found for that job id."))?;
    println!("{}", pretty(&job));
    Ok(Verdict::Success)
}

/// `artifacts [--filename F] JOB`.
pub async fn artifacts(client: &Client, job_id: &str, filename: &Path) -> anyhow::Result<Verdict> {
    println!("Downloading artifacts tarball...");
    client
        .download_artifacts(job_id, filename)
        .await
        .map_err(|e| no_data(e, job_id, "No artifacts tarball found for that job id."))?;
    println!("Artifacts downloaded to {}", filename.display());
    Ok(Verdict::Success)
}

/// `cancel JOB`.
pub async fn cancel(client: &Client, job_id: &str) -> anyhow::Result<Verdict> {
    client.cancel_job(job_id).await.map_err(|e| match e {
        ClientError::Status { status: 400, .. } => {
            anyhow::Error::new(e).context("Invalid job ID specified or the job is already completed/cancelled.")
        }
        other => explain(other, Some(job_id)),
    })?;
    Ok(Verdict::Success)
}

/// Maps "no such job" (204) to testflinger-cli's message, other errors with hints.
pub(super) fn no_data(e: ClientError, job_id: &str, message: &str) -> anyhow::Error {
    match e {
        ClientError::NotFound { .. } => anyhow::Error::new(e).context(message.to_owned()),
        other => explain(other, Some(job_id)),
    }
}

/// Options of `reserve`.
pub struct ReserveOptions {
    pub queue: Option<String>,
    pub image: Option<String>,
    pub distro: Option<String>,
    pub keys: Vec<String>,
    pub timeout: u64,
    pub yes: bool,
    pub dry_run: bool,
    pub interval: f64,
}

/// `reserve`: provision and reserve a device, then follow the job.
pub async fn reserve(client: &Client, opts: &ReserveOptions) -> anyhow::Result<Verdict> {
    let Some(queue) = opts.queue.clone() else {
        let queues = client.list_queues().await.unwrap_or_default();
        let names: Vec<&str> = queues.keys().map(String::as_str).collect();
        bail!(
            "--queue is required (advertised queues: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        );
    };
    if opts.keys.is_empty() {
        bail!("give at least one SSH key to let in: -k lp:<user> or -k gh:<user>");
    }
    for key in &opts.keys {
        if !phasebox_jobspec::is_ssh_key_entry(key) {
            bail!("invalid SSH key {key:?}: expected lp:<user> or gh:<user>");
        }
    }
    let mut job = json!({
        "job_queue": queue,
        "reserve_data": {"ssh_keys": opts.keys, "timeout": opts.timeout},
    });
    if let Some(distro) = &opts.distro {
        job["provision_data"] = json!({ "distro": distro });
    } else if let Some(image) = &opts.image {
        job["provision_data"] = json!({ "url": image_url(client, &queue, image).await? });
    }
    println!("\nThe following job will be submitted:");
    println!("{}", serde_json::to_string_pretty(&job).expect("JSON values serialise"));
    if opts.dry_run {
        return Ok(Verdict::Success);
    }
    if !opts.yes {
        if !std::io::stdin().is_terminal() {
            bail!("not submitting without confirmation: pass --yes (or --dry-run to only print the job)");
        }
        eprint!("Proceed? (Y/n) ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).context("reading the answer")?;
        if !matches!(answer.trim(), "" | "y" | "Y") {
            return Ok(Verdict::Success);
        }
    }
    let job_id = submit_job(client, &mut job, Path::new("."), false).await?;
    println!("Job submitted successfully!");
    println!("job_id: {job_id}");
    poll::follow(client, &job_id, &poll::Follow::new(opts.interval)).await
}

/// An image name the queue advertises (`url: <URL>`), or a URL as given.
async fn image_url(client: &Client, queue: &str, image: &str) -> anyhow::Result<String> {
    let images = match client.queue_images(queue).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("warning: Unable to get a list of images from the server! ({e})");
            Default::default()
        }
    };
    if let Some(provision) = images.get(image) {
        return Ok(provision.trim().strip_prefix("url:").map(str::trim).unwrap_or(provision.trim()).to_owned());
    }
    if image.starts_with("http://") || image.starts_with("https://") {
        return Ok(image.to_owned());
    }
    let names: Vec<&str> = images.keys().map(String::as_str).collect();
    bail!(
        "queue {queue} advertises no image {image:?} (images: {}); give a name from the list or a URL",
        if names.is_empty() { "none".into() } else { names.join(", ") }
    )
}
