//! Calls an agent makes: register and report state, claim jobs, post results, log fragments,
//! artifacts and provision logs, fetch attachments.
//!
//! An agent is identified by the `agent_name` cookie that `POST /v1/agents/data/<name>` sets;
//! the client's cookie jar keeps it. One process serving several devices (several agent
//! names) should claim with [`Client::claim_job_as`], which names the agent explicitly.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::COOKIE;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, endpoint, expect_ok, expect_success, seg};
use crate::error::{ClientError, Result};
use crate::types::{LogFragment, LogType};
use crate::wire::{ClaimedJob, ResultUpdate};

impl Client {
    /// `GET /v1/job?queue=…`: claims the next job of `queues` for the agent named by the
    /// cookie jar (set by the last [`post_agent_data`](Self::post_agent_data)).
    ///
    /// `wait: None` asks once and answers at once (Testflinger's polling); `Some(d)` uses
    /// phasebox's long-poll (`&wait=<secs>`), where the server answers the moment a job
    /// arrives or after `d` (capped by the server). `None` when there is no job.
    pub async fn claim_job(&self, queues: &[String], wait: Option<Duration>) -> Result<Option<ClaimedJob>> {
        self.claim(None, queues, wait).await
    }

    /// [`claim_job`](Self::claim_job) for the agent `agent`, whatever the cookie jar holds.
    pub async fn claim_job_as(
        &self,
        agent: &str,
        queues: &[String],
        wait: Option<Duration>,
    ) -> Result<Option<ClaimedJob>> {
        self.claim(Some(agent), queues, wait).await
    }

    async fn claim(
        &self,
        agent: Option<&str>,
        queues: &[String],
        wait: Option<Duration>,
    ) -> Result<Option<ClaimedJob>> {
        let mut params: Vec<(&str, String)> = queues.iter().map(|q| ("queue", q.clone())).collect();
        let mut limit = self.timeout();
        if let Some(w) = wait {
            let secs = w.as_secs_f64();
            params.push(("wait", if secs.fract() == 0.0 { format!("{}", w.as_secs()) } else { format!("{secs:.3}") }));
            limit += w;
        }
        let cookie = match agent {
            Some(a) => Some(
                reqwest::header::HeaderValue::from_str(&format!("agent_name={a}"))
                    .map_err(|_| ClientError::InvalidConfig(format!("agent name {a:?} cannot be sent in a cookie")))?,
            ),
            None => None,
        };
        let ep = "GET /v1/job";
        let build = |r: reqwest::RequestBuilder| {
            let r = r.query(&params);
            Ok(match &cookie {
                Some(c) => r.header(COOKIE, c.clone()),
                None => r,
            })
        };
        let r = self.send(Method::GET, "/v1/job", limit, &build).await?;
        if r.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let r = expect_ok(r, ep).await?;
        let bytes = r.bytes().await.map_err(|e| self.transport_error(e, ep, limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let job: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
            endpoint: ep.into(),
            message: format!("the job is not JSON: {e}"),
        })?;
        // Testflinger's agent treats `{}` as "no job".
        if job.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        if job.get("job_id").and_then(Value::as_str).is_none() {
            return Err(ClientError::BadResponse { endpoint: ep.into(), message: "the job has no job_id".into() });
        }
        let job = serde_json::from_value(job).map_err(|e| ClientError::BadResponse {
            endpoint: ep.into(),
            message: format!("the job does not parse: {e}"),
        })?;
        Ok(Some(job))
    }

    /// `POST /v1/agents/data/<name>`: registers the agent or updates its fields (`state`,
    /// `comment`, `queues`, `location`, `provision_type`, `identifier`, `job_id`, `log`). The
    /// answer sets the `agent_name` cookie claims need. Also the heartbeat. `data`: an
    /// [`AgentUpdate`](crate::AgentUpdate), or any JSON object.
    pub async fn post_agent_data(&self, name: &str, data: &(impl Serialize + Sync + ?Sized)) -> Result<()> {
        let path = format!("/v1/agents/data/{}", seg(name));
        let ep = endpoint(&Method::POST, &path);
        expect_success(self.call_json(Method::POST, &path, data).await?, &ep).await
    }

    /// `POST /v1/agents/queues`: advertised queues, `{queue: description}`.
    pub async fn post_queues(&self, queues: &Value) -> Result<()> {
        expect_success(self.call_json(Method::POST, "/v1/agents/queues", queues).await?, "POST /v1/agents/queues").await
    }

    /// `POST /v1/agents/images`: advertised images, `{queue: {image: "url: …"}}`.
    pub async fn post_images(&self, images: &Value) -> Result<()> {
        expect_success(self.call_json(Method::POST, "/v1/agents/images", images).await?, "POST /v1/agents/images").await
    }

    /// `POST /v1/result/<id> {"job_state": state}`: what the agent posts before each phase.
    pub async fn post_job_state(&self, job_id: &str, state: &str) -> Result<()> {
        self.post_result(job_id, &ResultUpdate { job_state: Some(state.to_owned()), ..ResultUpdate::default() }).await
    }

    /// `POST /v1/result/<id>`: `status` (cumulative, phase → exit code), `device_info`,
    /// `job_state`. The final post is `{"status": {...}, "job_state": "complete"}`. `result`:
    /// a [`ResultUpdate`], or any JSON object.
    pub async fn post_result(&self, job_id: &str, result: &(impl Serialize + Sync + ?Sized)) -> Result<()> {
        let path = format!("/v1/result/{}", seg(job_id));
        let ep = endpoint(&Method::POST, &path);
        expect_success(self.call_json(Method::POST, &path, result).await?, &ep).await
    }

    /// `POST /v1/result/<id>/log/<type>`: one log fragment.
    pub async fn post_log_fragment(&self, job_id: &str, log_type: LogType, fragment: &LogFragment) -> Result<()> {
        let path = format!("/v1/result/{}/log/{}", seg(job_id), log_type.as_str());
        let ep = endpoint(&Method::POST, &path);
        let body = serde_json::to_value(fragment)
            .map_err(|e| ClientError::InvalidConfig(format!("log fragment of job {job_id}: {e}")))?;
        expect_success(self.call_json(Method::POST, &path, &body).await?, &ep).await
    }

    /// `POST /v1/result/<id>/artifact`: uploads the artifacts archive at `archive` (tar.gz
    /// with top-level `artifacts/`), streamed from the file.
    pub async fn post_artifact(&self, job_id: &str, archive: &Path) -> Result<()> {
        let path = format!("/v1/result/{}/artifact", seg(job_id));
        let ep = endpoint(&Method::POST, &path);
        let io = |source| ClientError::Io { path: archive.to_owned(), source };
        // Checked once up front so a missing file is an Io error, not a failed request.
        std::fs::metadata(archive).map_err(io)?;
        let build = |r: reqwest::RequestBuilder| {
            let file = std::fs::File::open(archive).map_err(io)?;
            let len = file.metadata().map_err(io)?.len();
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name("file")
                .mime_str("application/x-gzip")
                .map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
            Ok(r.multipart(Form::new().part("file", part)))
        };
        let r = self.send(Method::POST, &path, self.transfer_timeout(), &build).await?;
        expect_success(r, &ep).await?;
        tracing::info!(job_id = %job_id, "artifacts uploaded");
        Ok(())
    }

    /// `GET /v1/job/<id>/attachments`: the job's attachments archive, in memory.
    /// [`ClientError::NotFound`] when the job has none.
    pub async fn get_attachments(&self, job_id: &str) -> Result<Bytes> {
        let path = format!("/v1/job/{}/attachments", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.send(Method::GET, &path, self.transfer_timeout(), &|r| Ok(r)).await?;
        if r.status() == StatusCode::NO_CONTENT {
            return Err(ClientError::NotFound { endpoint: ep, message: format!("job {job_id} has no attachments") });
        }
        let r = expect_ok(r, &ep).await?;
        r.bytes().await.map_err(|e| self.transport_error(e, &ep, self.transfer_timeout()))
    }

    /// `GET /v1/job/<id>/attachments` into the file `dest` (through a temporary file beside
    /// it); returns its size. [`ClientError::NotFound`] when the job has none.
    pub async fn download_attachments(&self, job_id: &str, dest: &Path) -> Result<u64> {
        let path = format!("/v1/job/{}/attachments", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.send(Method::GET, &path, self.transfer_timeout(), &|r| Ok(r)).await?;
        if r.status() == StatusCode::NO_CONTENT {
            return Err(ClientError::NotFound { endpoint: ep, message: format!("job {job_id} has no attachments") });
        }
        let r = expect_ok(r, &ep).await?;
        self.save(r, &ep, dest).await
    }

    /// `POST /v1/agents/provision_logs/<agent>`: `{job_id, exit_code, detail}` after a
    /// provision phase ([`ProvisionLogEntry`](crate::ProvisionLogEntry), or any JSON object).
    pub async fn post_provision_log(&self, agent: &str, entry: &(impl Serialize + Sync + ?Sized)) -> Result<()> {
        let path = format!("/v1/agents/provision_logs/{}", seg(agent));
        let ep = endpoint(&Method::POST, &path);
        expect_success(self.call_json(Method::POST, &path, entry).await?, &ep).await
    }

    /// `POST /v1/job/<id>/events`: the job's status events so far (Testflinger posts the
    /// whole list each time), which the server forwards to the job's webhook: a
    /// [`StatusEvents`](crate::StatusEvents), or any JSON object.
    pub async fn post_job_events(&self, job_id: &str, events: &(impl Serialize + Sync + ?Sized)) -> Result<()> {
        let path = format!("/v1/job/{}/events", seg(job_id));
        let ep = endpoint(&Method::POST, &path);
        expect_success(self.call_json(Method::POST, &path, events).await?, &ep).await
    }
}
