//! Calls a user makes: submit, follow and cancel jobs, read results, logs and artifacts, list
//! queues and agents, write secrets.

use std::collections::BTreeMap;
use std::path::Path;

use phasebox_redact::Secret;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, endpoint, expect_ok, expect_success, json_body, seg, text_body, unexpected};
use crate::error::{ClientError, Result};
use crate::types::{LogChunk, LogQuery, LogType, SecretExpiry};
use crate::wire::AgentData;

impl Client {
    /// `GET /v1/`: the server's banner (`Testflinger Server v…`). A cheap connectivity check.
    pub async fn server_version(&self) -> Result<String> {
        let ep = "GET /v1/";
        let r = expect_ok(self.call(Method::GET, "/v1/").await?, ep).await?;
        text_body(r, ep).await.map(|t| t.trim().to_owned())
    }

    /// `POST /v1/job`: submits a job (Testflinger's job JSON); returns its id.
    pub async fn submit_job(&self, job: &Value) -> Result<String> {
        let ep = "POST /v1/job";
        let r = self.call_json(Method::POST, "/v1/job", job).await?;
        let body = json_body(expect_ok(r, ep).await?, ep).await?;
        let id = body.get("job_id").and_then(Value::as_str).filter(|s| !s.is_empty());
        let id = id.ok_or_else(|| ClientError::BadResponse {
            endpoint: ep.into(),
            message: "no job_id in the answer".into(),
        })?;
        tracing::info!(job_id = %id, "job submitted");
        Ok(id.to_owned())
    }

    /// `POST /v1/job/<id>/attachments`: uploads the job's attachments archive (tar.gz; see
    /// Testflinger's packing: `<phase>/<path>`). The job is not dispatched before this.
    pub async fn upload_attachments(&self, job_id: &str, archive: Vec<u8>) -> Result<()> {
        let path = format!("/v1/job/{}/attachments", seg(job_id));
        let archive = bytes::Bytes::from(archive);
        let build = |r: reqwest::RequestBuilder| {
            let part = Part::stream_with_length(archive.clone(), archive.len() as u64)
                .file_name("file")
                .mime_str("application/x-gzip")
                .map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
            Ok(r.multipart(Form::new().part("file", part)))
        };
        let r = self.send(Method::POST, &path, self.transfer_timeout(), &build).await?;
        expect_success(r, &endpoint(&Method::POST, &path)).await
    }

    /// `GET /v1/job/<id>`: the job as submitted (secret paths, never values).
    /// [`ClientError::NotFound`] when the server has no such job.
    pub async fn get_job(&self, job_id: &str) -> Result<Value> {
        let path = format!("/v1/job/{}", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        let r = no_job(r, &ep, job_id).await?;
        json_body(r, &ep).await
    }

    /// `GET /v1/job/<id>/position`: the job's place in its queue (0 = next); `None` when it
    /// is no longer waiting (or unknown).
    pub async fn job_position(&self, job_id: &str) -> Result<Option<u64>> {
        let path = format!("/v1/job/{}/position", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        if r.status() == StatusCode::GONE {
            return Ok(None);
        }
        let text = text_body(expect_ok(r, &ep).await?, &ep).await?;
        let t = text.trim().trim_matches('"');
        t.parse::<u64>()
            .map(Some)
            .map_err(|_| ClientError::BadResponse { endpoint: ep, message: format!("position {t:?} is not a number") })
    }

    /// `POST /v1/job/<id>/action {"action": "cancel"}`. A job already complete or cancelled
    /// is a [`ClientError::Status`] 400.
    pub async fn cancel_job(&self, job_id: &str) -> Result<()> {
        let path = format!("/v1/job/{}/action", seg(job_id));
        let ep = endpoint(&Method::POST, &path);
        let r = self.call_json(Method::POST, &path, &json!({ "action": "cancel" })).await?;
        if r.status() == StatusCode::BAD_REQUEST {
            let message = crate::client::read_message(r).await;
            return Err(ClientError::Status {
                endpoint: ep,
                status: 400,
                message: format!(
                    "{message} (job {job_id}: an invalid id, or the job is already complete or cancelled)"
                ),
            });
        }
        expect_success(r, &ep).await?;
        tracing::info!(job_id = %job_id, "job cancelled");
        Ok(())
    }

    /// `GET /v1/result/<id>`: `job_state`, `<phase>_status`, `<phase>_output`,
    /// `<phase>_serial`, `device_info`. [`ClientError::NotFound`] when the server has no such
    /// job (or no results for it yet).
    pub async fn get_results(&self, job_id: &str) -> Result<Value> {
        let path = format!("/v1/result/{}", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        let r = no_job(r, &ep, job_id).await?;
        json_body(r, &ep).await
    }

    /// The job's state (`waiting`, `running`, a phase name, `complete`, `cancelled`, ...),
    /// read from `GET /v1/result/<id>`.
    pub async fn job_state(&self, job_id: &str) -> Result<String> {
        let results = self.get_results(job_id).await?;
        results.get("job_state").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| ClientError::BadResponse {
            endpoint: format!("GET /v1/result/{job_id}"),
            message: "no job_state in the results".into(),
        })
    }

    /// `GET /v1/result/<id>/artifact`: writes the artifacts archive to `dest` (through a
    /// temporary file beside it, so `dest` is never half-written); returns its size.
    /// [`ClientError::NotFound`] when the job has none.
    pub async fn download_artifacts(&self, job_id: &str, dest: &Path) -> Result<u64> {
        let path = format!("/v1/result/{}/artifact", seg(job_id));
        let ep = endpoint(&Method::GET, &path);
        let r = self.send(Method::GET, &path, self.transfer_timeout(), &|r| Ok(r)).await?;
        if r.status() == StatusCode::NO_CONTENT {
            return Err(ClientError::NotFound { endpoint: ep, message: format!("job {job_id} has no artifacts") });
        }
        let r = expect_ok(r, &ep).await?;
        self.save(r, &ep, dest).await
    }

    /// `GET /v1/result/<id>/log/<type>?start_fragment=N`: the job's log from fragment `N` on.
    pub async fn get_log(&self, job_id: &str, log_type: LogType, start_fragment: u64) -> Result<LogChunk> {
        self.get_log_query(job_id, log_type, &LogQuery { start_fragment, ..LogQuery::default() }).await
    }

    /// [`get_log`](Self::get_log) with every query parameter (`start_timestamp`, `phase`).
    pub async fn get_log_query(&self, job_id: &str, log_type: LogType, query: &LogQuery) -> Result<LogChunk> {
        let mut params = vec![("start_fragment", query.start_fragment.to_string())];
        if let Some(t) = &query.start_timestamp {
            params.push(("start_timestamp", t.clone()));
        }
        if let Some(p) = &query.phase {
            params.push(("phase", p.clone()));
        }
        let path = format!("/v1/result/{}/log/{}", seg(job_id), log_type.as_str());
        let ep = endpoint(&Method::GET, &path);
        let r = self.send(Method::GET, &path, self.timeout(), &|r| Ok(r.query(&params))).await?;
        let raw = json_body(expect_ok(r, &ep).await?, &ep).await?;
        LogChunk::from_json(log_type, raw).map_err(|message| ClientError::BadResponse { endpoint: ep, message })
    }

    /// `GET /v1/agents/queues`: queue name → description, for queues agents advertise.
    pub async fn list_queues(&self) -> Result<BTreeMap<String, String>> {
        let ep = "GET /v1/agents/queues";
        let body = json_body(expect_ok(self.call(Method::GET, "/v1/agents/queues").await?, ep).await?, ep).await?;
        let map = body
            .as_object()
            .ok_or_else(|| ClientError::BadResponse { endpoint: ep.into(), message: "not an object".into() })?;
        Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect())
    }

    /// `GET /v1/agents/images/<queue>`: image name → provision data (`url: …`) for a queue.
    pub async fn queue_images(&self, queue: &str) -> Result<BTreeMap<String, String>> {
        let path = format!("/v1/agents/images/{}", seg(queue));
        let ep = endpoint(&Method::GET, &path);
        let body = json_body(expect_ok(self.call(Method::GET, &path).await?, &ep).await?, &ep).await?;
        let map = body
            .as_object()
            .ok_or_else(|| ClientError::BadResponse { endpoint: ep, message: "not an object".into() })?;
        Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
            .collect())
    }

    /// `GET /v1/agents/data`: every agent (`name`, `state`, `queues`, `location`, ...).
    pub async fn list_agents(&self) -> Result<Vec<Value>> {
        let ep = "GET /v1/agents/data";
        let r = self.call(Method::GET, "/v1/agents/data").await?;
        list(r, ep).await
    }

    /// `GET /v1/agents/data/<name>`: one agent, with `restricted_to`.
    /// [`ClientError::NotFound`] when there is no such agent.
    pub async fn agent_data(&self, name: &str) -> Result<AgentData> {
        let path = format!("/v1/agents/data/{}", seg(name));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound { endpoint: ep, message: format!("Agent '{name}' does not exist.") });
        }
        let data = json_body(expect_ok(r, &ep).await?, &ep).await?;
        serde_json::from_value(data).map_err(|e| ClientError::BadResponse {
            endpoint: ep,
            message: format!("the agent data does not parse: {e}"),
        })
    }

    /// `GET /v1/queues/<queue>/agents`: the agents serving a queue.
    /// [`ClientError::NotFound`] when no agent lists it.
    pub async fn queue_agents(&self, queue: &str) -> Result<Vec<Value>> {
        let path = format!("/v1/queues/{}/agents", seg(queue));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        list(r, &ep).await
    }

    /// `GET /v1/queues/<queue>/jobs`: its jobs in any state (`job_id`, `created_at`,
    /// `job_state`, `job_queue`); empty when none.
    pub async fn queue_jobs(&self, queue: &str) -> Result<Vec<Value>> {
        let path = format!("/v1/queues/{}/jobs", seg(queue));
        let ep = endpoint(&Method::GET, &path);
        let r = self.call(Method::GET, &path).await?;
        list(r, &ep).await
    }

    /// `GET /v1/queues/wait_times?queue=…`: per queue, percentiles of the seconds jobs waited.
    pub async fn queue_wait_times(&self, queues: &[String]) -> Result<Value> {
        let ep = "GET /v1/queues/wait_times";
        let params: Vec<(&str, &str)> = queues.iter().map(|q| ("queue", q.as_str())).collect();
        let r = self.send(Method::GET, "/v1/queues/wait_times", self.timeout(), &|r| Ok(r.query(&params))).await?;
        json_body(expect_ok(r, ep).await?, ep).await
    }

    /// `GET /v1/restricted-queues`: `[{"queue", "owners"}]`.
    pub async fn restricted_queues(&self) -> Result<Vec<Value>> {
        let ep = "GET /v1/restricted-queues";
        let r = self.call(Method::GET, "/v1/restricted-queues").await?;
        list(r, ep).await
    }

    /// `PUT /v1/secrets/<client_id>/<path>` with the server's default expiry.
    /// Returns `expires_at` (ISO 8601), `None` when it never expires.
    pub async fn put_secret(&self, client_id: &str, path: &str, value: &Secret) -> Result<Option<String>> {
        self.put_secret_with(client_id, path, value, SecretExpiry::Default).await
    }

    /// `PUT /v1/secrets/<client_id>/<path>` with a chosen expiry. Only the owner may write its
    /// secrets; the value is never logged or put in an error.
    pub async fn put_secret_with(
        &self,
        client_id: &str,
        path: &str,
        value: &Secret,
        expiry: SecretExpiry,
    ) -> Result<Option<String>> {
        let url_path = secret_path(client_id, path);
        let ep = endpoint(&Method::PUT, &url_path);
        let mut body = json!({ "value": value.expose() });
        match expiry {
            SecretExpiry::Default => {}
            SecretExpiry::After(n) => body["expire_after"] = json!(n),
            SecretExpiry::Never => body["expire_after"] = Value::Null,
            SecretExpiry::SingleUse => body["ephemeral"] = json!(true),
        }
        let r = self.call_json(Method::PUT, &url_path, &body).await?;
        drop(body);
        let answer = json_body(expect_ok(r, &ep).await?, &ep).await?;
        Ok(answer.get("expires_at").and_then(Value::as_str).map(str::to_owned))
    }

    /// `DELETE /v1/secrets/<client_id>/<path>` (deleting a missing secret succeeds).
    pub async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()> {
        let url_path = secret_path(client_id, path);
        let ep = endpoint(&Method::DELETE, &url_path);
        expect_success(self.call(Method::DELETE, &url_path).await?, &ep).await
    }

    /// Streams an answer's body into `dest` through a temporary file beside it.
    pub(crate) async fn save(&self, mut response: Response, ep: &str, dest: &Path) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { path, source }
        };
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into());
        let tmp = dest.with_file_name(format!(".{name}.part-{}", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) =
                response.chunk().await.map_err(|e| self.transport_error(e, ep, self.transfer_timeout()))?
            {
                file.write_all(&chunk).await.map_err(io(&tmp))?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io(&tmp))?;
            file.sync_all().await.map_err(io(&tmp))?;
            tokio::fs::rename(&tmp, dest).await.map_err(io(dest))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map(|()| written)
    }
}

/// `/v1/secrets/<client_id>/<path>`, each path segment encoded.
fn secret_path(client_id: &str, path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(seg).collect();
    format!("/v1/secrets/{}/{}", seg(client_id), segments.join("/"))
}

/// 204 (Testflinger's "no such job") → [`ClientError::NotFound`]; else requires 200.
async fn no_job(r: Response, ep: &str, job_id: &str) -> Result<Response> {
    if r.status() == StatusCode::NO_CONTENT {
        return Err(ClientError::NotFound {
            endpoint: ep.to_owned(),
            message: format!("No data found for job {job_id}"),
        });
    }
    if r.status() == StatusCode::BAD_REQUEST {
        let message = crate::client::read_message(r).await;
        return Err(ClientError::Status {
            endpoint: ep.to_owned(),
            status: 400,
            message: format!("{message} (is {job_id:?} a job id?)"),
        });
    }
    expect_ok(r, ep).await
}

/// A JSON list; 204 is an empty one.
async fn list(r: Response, ep: &str) -> Result<Vec<Value>> {
    if r.status() == StatusCode::NO_CONTENT {
        return Ok(Vec::new());
    }
    if !r.status().is_success() {
        return Err(unexpected(r, ep).await);
    }
    match json_body(r, ep).await? {
        Value::Array(items) => Ok(items),
        // Testflinger answers `{}` for an empty job list in some versions.
        Value::Object(o) if o.is_empty() => Ok(Vec::new()),
        _ => Err(ClientError::BadResponse { endpoint: ep.to_owned(), message: "not a list".into() }),
    }
}
