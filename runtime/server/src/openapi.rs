//! The OpenAPI 3.1 description of every route in [`crate::router`], served at
//! `GET /phasebox/v1/openapi.json`: paths, methods, parameters, request and response bodies
//! as the handlers define them, and who may call each (`security` plus `x-roles`, the roles
//! of reference §3.3; with `anonymous_access` a request without a token acts as contributor).
//!
//! The document is built once per server from its configuration. A test checks that every
//! route of the router is described here and that nothing else is.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::auth::{self, Role};
use crate::config::ServerConfig;
use crate::handlers::PHASES;

/// The serialised document, ready to serve.
#[derive(Debug, Clone)]
pub struct Spec(Bytes);

impl Spec {
    /// Builds the document for a server with `config`.
    pub fn new(config: &ServerConfig) -> Spec {
        Spec(Bytes::from(document(config).to_string()))
    }

    /// `200 application/json`.
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0.clone()).into_response()
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// One operation, built step by step.
struct Op(Map<String, Value>);

impl Op {
    fn new(id: &str, tag: &str, summary: &str) -> Op {
        let mut m = Map::new();
        m.insert("operationId".into(), json!(id));
        m.insert("tags".into(), json!([tag]));
        m.insert("summary".into(), json!(summary));
        m.insert("parameters".into(), json!([]));
        m.insert("responses".into(), json!({}));
        Op(m)
    }

    fn desc(mut self, text: &str) -> Op {
        self.0.insert("description".into(), json!(text));
        self
    }

    /// Role-gated: a bearer token with one of `roles`; anonymous callers act as `contributor`
    /// when the server allows anonymous access.
    fn roles(mut self, roles: &[Role], anonymous: bool) -> Op {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let mut security = vec![json!({ "bearerAuth": [] })];
        if anonymous && roles.contains(&Role::Contributor) {
            security.push(json!({}));
        }
        self.0.insert("security".into(), Value::Array(security));
        self.0.insert("x-roles".into(), json!(names));
        self = self.resp(401, "Missing, expired or not-yet-valid token (refresh and retry).", error_json());
        self.resp(
            403,
            "The caller's role may not use this endpoint (`Specified action requires role: …`).",
            error_json(),
        )
    }

    /// No authentication.
    fn public(mut self) -> Op {
        self.0.insert("security".into(), json!([]));
        self.0.insert("x-roles".into(), json!([]));
        self
    }

    fn param(mut self, location: &str, name: &str, description: &str, schema: Value, required: bool) -> Op {
        let mut p = json!({ "name": name, "in": location, "description": description, "required": required,
                            "schema": schema });
        if location == "query" && schema.get("type") == Some(&json!("array")) {
            p["style"] = json!("form");
            p["explode"] = json!(true);
        }
        if let Some(Value::Array(list)) = self.0.get_mut("parameters") {
            list.push(p);
        }
        self
    }

    fn path(self, name: &str, description: &str, schema: Value) -> Op {
        self.param("path", name, description, schema, true)
    }

    fn job_id(self) -> Op {
        self.path(
            "job_id",
            "The job's id: a UUID in any form Python's `uuid.UUID()` accepts.",
            json!({"type": "string"}),
        )
        .resp(400, "`job_id` is not a UUID (plain text `Invalid job id`).", text())
    }

    fn query(self, name: &str, description: &str, schema: Value) -> Op {
        self.param("query", name, description, schema, false)
    }

    fn agent_cookie(self) -> Op {
        self.param(
            "cookie",
            "agent_name",
            "The agent's name, set by `POST /v1/agents/data/{agent}`.",
            json!({"type": "string"}),
            true,
        )
    }

    fn body(mut self, content_type: &str, schema: Value, required: bool, description: &str) -> Op {
        self.0.insert(
            "requestBody".into(),
            json!({ "required": required, "description": description,
                    "content": { content_type: { "schema": schema } } }),
        );
        self
    }

    fn json_body(self, schema: Value, description: &str) -> Op {
        self.body("application/json", schema, true, description)
    }

    fn multipart_file(self, description: &str) -> Op {
        let schema = json!({
            "type": "object", "required": ["file"],
            "properties": { "file": { "type": "string", "contentMediaType": "application/gzip" } }
        });
        self.body("multipart/form-data", schema, true, description)
    }

    fn resp(mut self, code: u16, description: &str, content: Option<(&str, Value)>) -> Op {
        let mut r = json!({ "description": description });
        if let Some((ct, schema)) = content {
            r["content"] = json!({ ct: { "schema": schema } });
        }
        if let Some(Value::Object(map)) = self.0.get_mut("responses") {
            map.insert(code.to_string(), r);
        }
        self
    }

    /// The job's owner only: its submitter or an admin (anyone with the id of a job submitted
    /// without credentials).
    fn owned(self) -> Op {
        self.err(401, "Missing or expired token, or the job was submitted with credentials and the caller has none.")
            .err(
                403,
                "The caller's role may not use this endpoint, or the job belongs to another client (only its \
                 submitter and admins may access it).",
            )
    }

    /// The agent that claimed the job only (its credential is bound to the job's agent name).
    fn claimed(self) -> Op {
        self.err(
            403,
            "The caller's role may not use this endpoint, or the job was not claimed by an agent its credential is \
             bound to.",
        )
        .err(404, "No such job.")
    }

    fn ok_json(self, description: &str, schema: Value) -> Op {
        self.resp(200, description, Some(("application/json", schema)))
    }

    fn ok_text(self) -> Op {
        self.resp(200, "Done (plain text `OK`).", text())
    }

    fn validation(self) -> Op {
        self.resp(422, "The body failed validation.", Some(("application/json", schema_ref("ValidationError"))))
    }

    fn err(self, code: u16, description: &str) -> Op {
        self.resp(code, description, error_json())
    }

    fn build(self) -> Value {
        Value::Object(self.0)
    }
}

fn error_json() -> Option<(&'static str, Value)> {
    Some(("application/json", schema_ref("Error")))
}

fn text() -> Option<(&'static str, Value)> {
    Some(("text/plain", json!({"type": "string"})))
}

fn string() -> Value {
    json!({"type": "string"})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn int_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "integer"}, "description": description})
}

/// The document for a server with `config`.
pub fn document(config: &ServerConfig) -> Value {
    let anon = config.anonymous_access;
    let users = |op: Op| op.roles(auth::USERS, anon);
    let any = |op: Op| op.roles(auth::ANY, anon);
    let agent = |op: Op| op.roles(auth::AGENT, anon);
    let agents_managers = |op: Op| op.roles(auth::AGENTS_AND_MANAGERS, anon);
    let managers = |op: Op| op.roles(auth::MANAGERS, anon);
    let admin = |op: Op| op.roles(auth::ADMIN, anon);
    let log_type = json!({"type": "string", "enum": ["output", "serial"]});

    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, op: Op| {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = op.build();
    };

    // ------------------------------------------------------------------------- banner
    for path in ["/v1", "/v1/"] {
        let id = if path == "/v1" { "root" } else { "rootSlash" };
        add(
            path,
            "get",
            Op::new(id, "server", "Server banner").public().resp(
                200,
                "`Testflinger Server v<version> (phasebox)`; clients check the prefix only.",
                text(),
            ),
        );
    }

    // -------------------------------------------------------------------------- tokens
    add(
        "/v1/oauth2/token",
        "post",
        Op::new("token", "auth", "Access and refresh token for client credentials")
            .desc(
                "HTTP Basic `client_id:client_secret`; any body is ignored. The access token is an HS256 JWT \
                   whose `permissions` claim carries the client's role and limits.",
            )
            .public()
            .resp(200, "Tokens.", Some(("application/json", schema_ref("TokenResponse"))))
            .resp(401, "No or malformed Basic credentials, or wrong client id or secret (plain text).", text())
            .build_with_security(json!([{ "basicAuth": [] }])),
    );
    add(
        "/v1/oauth2/refresh",
        "post",
        Op::new("refresh", "auth", "New access token for a refresh token")
            .public()
            .json_body(schema_ref("RefreshRequest"), "The refresh token from `/v1/oauth2/token`.")
            .ok_json("A new access token (no new refresh token).", schema_ref("AccessToken"))
            .err(400, "Unknown, revoked or expired refresh token, or malformed JSON.")
            .validation(),
    );
    add(
        "/v1/oauth2/revoke",
        "post",
        admin(Op::new("revoke", "auth", "Revoke a refresh token"))
            .json_body(schema_ref("RefreshRequest"), "The refresh token to revoke.")
            .ok_json("Revoked.", json!({"type": "object", "properties": {"status": {"const": "OK"}}}))
            .err(400, "Unknown or already revoked refresh token.")
            .validation(),
    );

    // ---------------------------------------------------------------------------- jobs
    add(
        "/v1/job",
        "post",
        users(Op::new("submitJob", "jobs", "Submit a job"))
            .desc(
                "JSON job definition (YAML when `Content-Type` contains `yaml`). Priority, restricted \
                   queues and long reservations are checked against the token's permissions.",
            )
            .body("application/json", schema_ref("Job"), true, "The job definition.")
            .ok_json("Stored; the job waits in its queue.", schema_ref("JobId"))
            .err(400, "Malformed JSON/YAML or an invalid `job_id`.")
            .err(409, "A job with this `job_id` exists already (phasebox).")
            .err(413, "Larger than `max_json_bytes`.")
            .validation(),
    );
    add(
        "/v1/job",
        "get",
        agent(Op::new("claimJob", "jobs", "Claim the next job (agents)"))
            .desc(
                "The highest-priority waiting job (FIFO among equals) of the given queues whose attachments are \
                   complete and that does not exclude this agent; it becomes `running`. Never handed out twice. \
                   phasebox addition: `wait=N` long-polls up to N seconds (capped by `max_long_poll`); a \
                   long-poll answers 204 at once when the agent's state is set to `offline`, `maintenance` or \
                   `restart`.",
            )
            .query("queue", "Queues to take from (repeat the parameter for several).", strings())
            .query("wait", "Long-poll: seconds to wait for a job (phasebox).", json!({"type": "number", "minimum": 0}))
            .agent_cookie()
            .ok_json("The job as dispatched, secrets resolved to values.", schema_ref("DispatchedJob"))
            .resp(204, "No job (at once, or when the long-poll deadline passed).", None)
            .err(400, "No `queue` given, or `wait` is not a number.")
            .err(
                403,
                "The caller is not an agent, or its credential is not bound to the cookie's agent name or to every \
                 queue asked for.",
            ),
    );
    add(
        "/v1/job/search",
        "get",
        users(Op::new("searchJobs", "jobs", "Search jobs by tags and states"))
            .query("tags", "Tags (repeatable).", strings())
            .query("match", "`any` (default) or `all` of the tags.", json!({"type": "string", "enum": ["any", "all"]}))
            .query(
                "state",
                "States (repeatable); `active` means not cancelled or complete.",
                json!({"type": "array", "items": {"type": "string", "enum": [
                    "setup", "provision", "firmware_update", "test", "allocate", "allocated", "reserve",
                    "cleanup", "cancelled", "completed", "active"]}}),
            )
            .ok_json(
                "Matching jobs in submission order (`job_id` null for jobs submitted without credentials, except for \
                 admins: such an id is the job's credential).",
                json!({"type": "array", "items": schema_ref("JobSummary")}),
            )
            .resp(422, "Unknown parameter or value.", Some(("application/json", schema_ref("ValidationError")))),
    );
    add(
        "/v1/job/{job_id}",
        "get",
        users(Op::new("getJob", "jobs", "A job as submitted"))
            .job_id()
            .owned()
            .ok_json("The job definition plus `job_id` (secret paths, never values).", schema_ref("Job"))
            .resp(204, "No such job.", None),
    );
    add(
        "/v1/job/{job_id}/position",
        "get",
        users(Op::new("jobPosition", "jobs", "Position of a waiting job in its queue"))
            .job_id()
            .owned()
            .resp(200, "0-based position, as text.", text())
            .resp(410, "Unknown or no longer waiting (plain text).", text()),
    );
    add(
        "/v1/job/{job_id}/action",
        "post",
        users(Op::new("jobAction", "jobs", "Cancel a job"))
            .job_id()
            .owned()
            .json_body(
                json!({"type": "object", "required": ["action"], "additionalProperties": false,
                       "properties": {"action": {"type": "string", "enum": ["cancel"]}}}),
                "The action.",
            )
            .ok_text()
            .resp(400, "Already completed or cancelled (plain text), or malformed JSON.", text())
            .validation(),
    );
    add(
        "/v1/job/{job_id}/attachments",
        "get",
        agent(Op::new("getAttachments", "jobs", "Download a job's attachments archive (agents)"))
            .job_id()
            .claimed()
            .resp(
                200,
                "The archive.",
                Some(("application/gzip", json!({"type": "string", "contentMediaType": "application/gzip"}))),
            )
            .resp(204, "No archive.", None),
    );
    add(
        "/v1/job/{job_id}/attachments",
        "post",
        users(Op::new("postAttachments", "jobs", "Upload a job's attachments archive"))
            .desc(
                "The job becomes claimable once this succeeds. One upload only: accepted while the job waits for \
                   its attachments and no other upload has begun; once complete, another upload is answered 200 \
                   and changes nothing.",
            )
            .job_id()
            .owned()
            .multipart_file("`file`: the tar.gz in Testflinger's layout (`<phase>/<file>`).")
            .ok_text()
            .err(409, "Another upload of the job's attachments is in progress.")
            .err(413, "Larger than `max_attachment_bytes`; nothing stored.")
            .resp(422, "The job is not waiting, or not awaiting attachments (plain text).", text()),
    );
    add(
        "/v1/job/{job_id}/events",
        "post",
        agent(Op::new("postJobEvents", "jobs", "Agent status events, forwarded to the job's webhook"))
            .desc(
                "Recorded in the job's event stream, then PUT to `job_status_webhook` if it has the scheme and \
                   host of the server's `webhook_url`; the webhook's answer is relayed.",
            )
            .job_id()
            .claimed()
            .json_body(schema_ref("StatusUpdate"), "The agent's events (all of them so far).")
            .resp(200, "The webhook's body and status.", text())
            .err(
                403,
                "`job_status_webhook` is not on the configured webhook host, or the job was not claimed by an agent \
                 the credential is bound to.",
            )
            .validation()
            .err(500, "No `webhook_url` configured, or the webhook refused authentication.")
            .err(502, "The webhook could not be reached.")
            .err(504, "The webhook timed out."),
    );

    // ------------------------------------------------------------------------- results
    add(
        "/v1/result/{job_id}",
        "post",
        agent(Op::new("postResult", "results", "Post results and job state (agents)"))
            .job_id()
            .err(
                403,
                "The caller's role may not use this endpoint, or the job was not claimed by an agent its credential \
                 is bound to.",
            )
            .json_body(schema_ref("ResultPost"), "Fields are replaced as given; an unknown job is a silent no-op.")
            .ok_text()
            .err(413, "`max_result_bytes` or more (`Payload too large`).")
            .validation(),
    );
    add(
        "/v1/result/{job_id}",
        "get",
        any(Op::new("getResult", "results", "A job's results with its logs"))
            .desc("For the job's owner (its submitter or an admin) and the agent that claimed it.")
            .job_id()
            .owned()
            .ok_json("Job state, per-phase status and output.", schema_ref("ResultGet"))
            .resp(204, "No such job.", None),
    );
    add(
        "/v1/result/{job_id}/artifact",
        "post",
        agent(Op::new("postArtifact", "results", "Upload a job's artifacts archive (agents)"))
            .job_id()
            .claimed()
            .multipart_file("`file`: the artifacts tar.gz; replaces an earlier one.")
            .ok_text()
            .err(413, "Larger than `max_artifact_bytes`; nothing stored."),
    );
    add(
        "/v1/result/{job_id}/artifact",
        "get",
        users(Op::new("getArtifact", "results", "Download a job's artifacts archive"))
            .job_id()
            .owned()
            .resp(
                200,
                "`artifact.tar.gz`.",
                Some(("application/gzip", json!({"type": "string", "contentMediaType": "application/gzip"}))),
            )
            .resp(204, "No artifacts.", None),
    );
    add(
        "/v1/result/{job_id}/log/{log_type}",
        "post",
        agent(Op::new("postLog", "results", "Post one log fragment (agents)"))
            .job_id()
            .claimed()
            .path("log_type", "Which log.", log_type.clone())
            .json_body(schema_ref("LogPost"), "One fragment.")
            .ok_text()
            .err(404, "Unknown `log_type`, or no such job.")
            .validation(),
    );
    add(
        "/v1/result/{job_id}/log/{log_type}",
        "get",
        users(Op::new("getLog", "results", "A job's log, per phase"))
            .job_id()
            .owned()
            .path("log_type", "Which log.", log_type)
            .query(
                "start_fragment",
                "Only fragments numbered this or higher.",
                json!({"type": "integer", "minimum": 0}),
            )
            .query(
                "start_timestamp",
                "Only fragments stamped this time or later (ISO 8601).",
                json!({"type": "string", "format": "date-time"}),
            )
            .query("phase", "Only this phase.", json!({"type": "string", "enum": PHASES}))
            .ok_json("`{<log_type>: {<phase>: {last_fragment_number, log_data}}}`.", schema_ref("LogGet"))
            .err(400, "Invalid query (`message` holds the field errors).")
            .err(404, "Unknown `log_type`."),
    );

    // -------------------------------------------------------------------------- agents
    add(
        "/v1/agents/queues",
        "get",
        users(Op::new("getQueues", "agents", "Queue descriptions"))
            .ok_json("Queue → description.", json!({"type": "object", "additionalProperties": {"type": "string"}})),
    );
    add(
        "/v1/agents/queues",
        "post",
        agents_managers(Op::new("postQueues", "agents", "Set queue descriptions"))
            .json_body(
                json!({"type": "object", "additionalProperties": {"type": "string"}, "propertyNames": {"minLength": 1}}),
                "Queue → description.",
            )
            .ok_text()
            .validation(),
    );
    add(
        "/v1/agents/images",
        "post",
        agents_managers(Op::new("postImages", "agents", "Set the images of queues"))
            .json_body(
                json!({"type": "object", "additionalProperties":
                    {"type": "object", "additionalProperties": {"type": "string"}}}),
                "Queue → {image name → provision data}; each queue's map is replaced.",
            )
            .ok_text()
            .validation(),
    );
    add(
        "/v1/agents/images/{queue}",
        "get",
        users(Op::new("getImages", "agents", "Images of a queue")).path("queue", "Queue name.", string()).ok_json(
            "Image name → provision data (`{}` when unknown).",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
    );
    add(
        "/v1/agents/data",
        "get",
        users(Op::new("listAgents", "agents", "Every agent"))
            .ok_json("Agents by name.", json!({"type": "array", "items": schema_ref("AgentOut")})),
    );
    add(
        "/v1/agents/data/{agent}",
        "get",
        any(Op::new("getAgent", "agents", "One agent"))
            .path("agent", "Agent name.", string())
            .ok_json("The agent.", schema_ref("AgentOut"))
            .resp(404, "Unknown agent (`{}`).", Some(("application/json", json!({"type": "object"})))),
    );
    add(
        "/v1/agents/data/{agent}",
        "post",
        agents_managers(Op::new("postAgent", "agents", "Register or update an agent"))
            .desc(
                "Sets the given fields (upsert) and appends `log` lines (the last 100 are kept). Answers with the \
                   `agent_name` cookie that `GET /v1/job` needs.",
            )
            .path("agent", "Agent name.", string())
            .json_body(schema_ref("AgentIn"), "Fields to set.")
            .err(
                403,
                "The caller's role may not use this endpoint, or (an agent) its credential is not bound to this \
                 agent name.",
            )
            .ok_json(
                "Stored; `Set-Cookie: agent_name=<agent>`.",
                json!({"type": "object", "properties": {"status": {"const": "OK"}}}),
            )
            .validation(),
    );
    add(
        "/v1/agents/provision_logs/{agent}",
        "post",
        agent(Op::new("postProvisionLog", "agents", "Record a provision outcome (agents)"))
            .path("agent", "Agent name.", string())
            .err(403, "The caller is not an agent, or its credential is not bound to this agent name.")
            .json_body(
                json!({"type": "object", "required": ["job_id", "exit_code"], "additionalProperties": false,
                       "properties": {"job_id": string(), "exit_code": {"type": "integer"}, "detail": string()}}),
                "The outcome; the agent's provision streak is updated.",
            )
            .ok_text()
            .resp(404, "Unknown agent (plain text `Agent not found`; the log is kept).", text())
            .validation(),
    );

    // -------------------------------------------------------------------------- queues
    add(
        "/v1/queues/wait_times",
        "get",
        users(Op::new("waitTimes", "queues", "Percentiles of queue wait times"))
            .query("queue", "Queues (repeatable); all when absent.", strings())
            .ok_json(
                "Queue → {\"5\", \"10\", \"50\", \"90\", \"95\"}: seconds from submission to claim.",
                json!({"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}}}),
            ),
    );
    add(
        "/v1/queues/{queue}/agents",
        "get",
        users(Op::new("queueAgents", "queues", "Agents listing a queue"))
            .path("queue", "Queue name.", string())
            .ok_json("The agents.", json!({"type": "array", "items": schema_ref("AgentOut")}))
            .err(404, "No agent lists the queue."),
    );
    add(
        "/v1/queues/{queue}/jobs",
        "get",
        users(Op::new("queueJobs", "queues", "Jobs of a queue, any state"))
            .path("queue", "Queue name.", string())
            .ok_json(
                "In submission order (`job_id` null for jobs submitted without credentials, except for admins).",
                json!({"type": "array", "items": {"allOf": [schema_ref("JobSummary"),
                    {"type": "object", "properties": {"job_queue": string()}}]}}),
            )
            .resp(204, "No jobs.", None),
    );

    // --------------------------------------------------------------- restricted queues
    let client_id_body = json!({"type": "object", "required": ["client_id"], "additionalProperties": false,
                                "properties": {"client_id": {"type": "string", "minLength": 1}}});
    add(
        "/v1/restricted-queues",
        "get",
        users(Op::new("listRestrictedQueues", "admin", "Restricted queues and their owners"))
            .ok_json("Restricted queues.", json!({"type": "array", "items": schema_ref("RestrictedQueue")})),
    );
    add(
        "/v1/restricted-queues/{queue}",
        "get",
        users(Op::new("getRestrictedQueue", "admin", "One restricted queue"))
            .path("queue", "Queue name.", string())
            .ok_json("The queue and its owners.", schema_ref("RestrictedQueue"))
            .err(404, "Not restricted."),
    );
    add(
        "/v1/restricted-queues/{queue}",
        "post",
        managers(Op::new("restrictQueue", "admin", "Restrict a queue to a client"))
            .path("queue", "Queue name (some agent must list it).", string())
            .json_body(client_id_body.clone(), "The client that may use the queue.")
            .ok_text()
            .err(400, "Empty `client_id` or malformed JSON.")
            .err(404, "Unknown client or queue.")
            .validation(),
    );
    add(
        "/v1/restricted-queues/{queue}",
        "delete",
        managers(Op::new("unrestrictQueue", "admin", "Lift a queue's restriction"))
            .desc("Un-restricts the queue for everybody and removes it from the client's allowed queues.")
            .path("queue", "Queue name.", string())
            .json_body(client_id_body, "The client to remove the queue from.")
            .ok_text()
            .err(400, "Empty `client_id` or malformed JSON.")
            .err(404, "Not restricted.")
            .validation(),
    );

    // --------------------------------------------------------------- client permissions
    add(
        "/v1/client-permissions",
        "get",
        managers(Op::new("listClients", "admin", "Every client's permissions"))
            .ok_json("Clients by id.", json!({"type": "array", "items": schema_ref("ClientPermissionsOut")})),
    );
    add(
        "/v1/client-permissions/{client_id}",
        "get",
        managers(Op::new("getClient", "admin", "One client's permissions"))
            .path("client_id", "Client id.", string())
            .ok_json("The client.", schema_ref("ClientPermissionsOut"))
            .err(404, "Unknown client."),
    );
    add(
        "/v1/client-permissions/{client_id}",
        "put",
        managers(Op::new("putClient", "admin", "Create or update a client"))
            .desc(
                "The caller's role must be at least the client's current and new role; only admins create or \
                   change agent clients. `testflinger-admin` cannot be changed through the API.",
            )
            .path("client_id", "Client id.", string())
            .json_body(schema_ref("ClientPermissionsIn"), "Fields to set; `client_secret` is required to create.")
            .resp(200, "`Created|Updated permissions for client '<id>'` (plain text).", text())
            .err(400, "Creating without `client_secret`, or malformed JSON.")
            .err(
                403,
                "The caller's role is below the client's current or new role, or a manager touches an agent client.",
            )
            .validation(),
    );
    add(
        "/v1/client-permissions/{client_id}",
        "delete",
        admin(Op::new("deleteClient", "admin", "Delete a client and its refresh tokens"))
            .path("client_id", "Client id.", string())
            .ok_text()
            .err(404, "Unknown client.")
            .err(422, "`testflinger-admin` cannot be deleted through the API."),
    );

    // -------------------------------------------------------------------------- secrets
    let secret_params = |op: Op| {
        op.path("client_id", "Owner: must be the caller's own client id.", string()).path(
            "path",
            "Secret path: segments of letters, digits, `_` and `-`, separated by `/` (which this parameter \
             may contain).",
            json!({"type": "string", "pattern": "^[a-zA-Z0-9_-]+(/[a-zA-Z0-9_-]+)*$"}),
        )
    };
    add(
        "/v1/secrets/{client_id}/{path}",
        "put",
        secret_params(users(Op::new("putSecret", "secrets", "Write a secret")))
            .desc("Encrypted at rest; readable only by agents running the owner's jobs.")
            .json_body(schema_ref("SecretIn"), "The value and its lifetime.")
            .ok_json("When it expires.", json!({"type": "object", "properties": {"expires_at": {"type": ["string", "null"], "format": "date-time"}}}))
            .err(400, "The server has no secrets store.")
            .validation(),
    );
    add(
        "/v1/secrets/{client_id}/{path}",
        "delete",
        secret_params(users(Op::new("deleteSecret", "secrets", "Delete a secret (missing is fine)")))
            .ok_text()
            .err(400, "The server has no secrets store.")
            .validation(),
    );

    // -------------------------------------------------------------- phasebox additions
    add(
        "/phasebox/v1/openapi.json",
        "get",
        Op::new("openapi", "phasebox", "This document").public().ok_json("OpenAPI 3.1.", json!({"type": "object"})),
    );
    add(
        "/phasebox/v1/job/{job_id}/events",
        "get",
        any(Op::new("jobEvents", "phasebox", "A job's events as server-sent events"))
            .desc(
                "`id` is the event's sequence number, `event` its kind (`submitted`, `claimed`, `state`, `result`, \
                   `log`, `attachments`, `artifact`, `agent`), `data` JSON. Ends with `end` once the job is in a \
                   terminal state and every event was sent. Resume with `after` or `Last-Event-ID`.",
            )
            .job_id()
            .owned()
            .query("after", "Only events with a greater sequence number.", json!({"type": "integer"}))
            .query(
                "kind",
                "Only events of these kinds (repeated, or comma-separated); `end` is always sent. 400 for an \
                 unknown kind.",
                json!({"type": "string"}),
            )
            .param("header", "Last-Event-ID", "As `after` (standard SSE resume).", json!({"type": "integer"}), false)
            .resp(200, "The event stream.", Some(("text/event-stream", string())))
            .err(400, "`after` is not a number, or `kind` names no event kind.")
            .err(404, "No such job."),
    );
    let stored = json!({"type": "object", "properties": {"sha256": string(), "size": {"type": "integer"}}});
    let wasm = json!({"type": "string", "contentMediaType": "application/wasm"});
    let sha = json!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"});
    add(
        "/phasebox/v1/plugins",
        "post",
        admin(Op::new("postPlugin", "phasebox", "Store a plugin component (admins)"))
            .body("application/wasm", wasm.clone(), true, "The component; stored under its sha256.")
            .ok_json("Stored.", stored.clone())
            .err(400, "Empty body.")
            .err(
                413,
                "Larger than `max_plugin_bytes`, or past the registry's `max_plugins` or `max_plugin_store_bytes`.",
            )
            .err(422, "Not a valid WebAssembly component; nothing stored."),
    );
    add(
        "/phasebox/v1/plugins/{sha256}",
        "put",
        admin(Op::new("putPlugin", "phasebox", "Store a plugin component under its hash (admins)"))
            .path("sha256", "The component's sha256 (64 hex digits).", sha.clone())
            .body("application/wasm", wasm.clone(), true, "The component; must hash to `sha256`.")
            .ok_json("Stored.", stored)
            .err(400, "Not a sha256, or an empty body.")
            .err(
                413,
                "Larger than `max_plugin_bytes`, or past the registry's `max_plugins` or `max_plugin_store_bytes`.",
            )
            .err(422, "The body hashes to something else, or is not a valid WebAssembly component; nothing stored."),
    );
    add(
        "/phasebox/v1/plugins/{sha256}",
        "get",
        any(Op::new("getPlugin", "phasebox", "Download a plugin component"))
            .path("sha256", "The component's sha256 (64 hex digits).", sha)
            .resp(200, "The component.", Some(("application/wasm", wasm)))
            .err(400, "Not a sha256.")
            .err(404, "Unknown plugin."),
    );
    if config.metrics_listen.is_none() {
        add(
            "/metrics",
            "get",
            Op::new("metrics", "phasebox", "Prometheus metrics")
                .desc(
                    "Any authenticated client (a scraper logs in with client credentials, e.g. Prometheus' `oauth2` \
                     block against `/v1/oauth2/token`); anonymous requests are refused even with anonymous access. \
                     `metrics_listen` serves it without authentication on an address of its own instead.",
                )
                .roles(auth::ANY, false)
                .resp(
                    200,
                    "Text exposition format 0.0.4 (queue depth, jobs by state, claim latency, requests, …).",
                    Some(("text/plain", string())),
                ),
        );
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "phasebox server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Testflinger's v1 REST API (wire-compatible: same paths, methods, JSON shapes and status \
                            codes) plus phasebox's additive extensions under `/phasebox/v1`. Error bodies are JSON \
                            `{\"message\", \"detail\"}` unless an operation says plain text; unknown routes answer \
                            404 in plain text, wrong methods 405.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "tags": [
            {"name": "server"}, {"name": "auth"}, {"name": "jobs"}, {"name": "results"}, {"name": "agents"},
            {"name": "queues"}, {"name": "admin"}, {"name": "secrets"}, {"name": "phasebox"},
        ],
        "paths": Value::Object(paths),
        "components": components(),
        "x-anonymous-access": anon,
    })
}

impl Op {
    /// Replaces the operation's security requirement.
    fn build_with_security(mut self, security: Value) -> Op {
        self.0.insert("security".into(), security);
        self
    }
}

fn components() -> Value {
    let phase_status: Map<String, Value> =
        PHASES.iter().map(|p| (format!("{p}_status"), json!({"type": "integer"}))).collect();
    let mut result_get = json!({
        "type": "object",
        "properties": { "job_state": string(), "device_info": {"type": "object"} },
        "patternProperties": {
            "^[a-z_]+_status$": {"type": "integer"},
            "^[a-z_]+_(output|serial)$": {"type": "string"},
        },
    });
    if let Some(Value::Object(props)) = result_get.get_mut("properties") {
        props.extend(phase_status);
    }
    let fragment = json!({"type": "object", "properties": {
        "last_fragment_number": {"type": "integer", "description": "-1 when there is none"},
        "log_data": string()}});
    json!({
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "Access token from `POST /v1/oauth2/token` (HS256, 10 minutes by default)."},
            "basicAuth": {"type": "http", "scheme": "basic", "description": "`client_id:client_secret`."},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["message"], "properties": {
                "message": {"description": "Text, or field errors for an invalid log query.",
                            "type": ["string", "object"]},
                "detail": {"type": "object"}}},
            "ValidationError": {"type": "object", "properties": {
                "message": {"const": "Validation error"},
                "detail": {"type": "object", "description": "`json` or `query` → field → messages.",
                           "additionalProperties": {"type": "object"}}}},
            "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token"],
                "properties": {"access_token": string(), "token_type": {"const": "Bearer"},
                               "expires_in": {"type": "integer"},
                               "refresh_token": {"type": "string", "pattern": "^[A-Za-z0-9]{48}$"}}},
            "AccessToken": {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                "properties": {"access_token": string(), "token_type": {"const": "Bearer"},
                               "expires_in": {"type": "integer"}}},
            "RefreshRequest": {"type": "object", "required": ["refresh_token"], "additionalProperties": false,
                "properties": {"refresh_token": {"type": "string", "minLength": 1}}},
            "JobId": {"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string", "format": "uuid"}}},
            "Job": {
                "type": "object", "required": ["job_queue"],
                "description": "A Testflinger job definition (phasebox additions live in `phasebox` blocks).",
                "properties": {
                    "job_id": {"type": "string", "description": "UUID for a resubmission; generated when absent."},
                    "job_queue": {"type": "string", "minLength": 1},
                    "parent_job_id": string(), "name": string(), "tags": strings(),
                    "global_timeout": {"type": "integer"}, "output_timeout": {"type": "integer"},
                    "allocation_timeout": {"type": "integer"},
                    "provision_data": {"type": ["object", "null"]},
                    "firmware_update_data": {"type": "object"},
                    "test_data": {"type": "object", "properties": {
                        "test_cmds": string(), "test_username": string(), "test_password": string(),
                        "attachments": {"type": "array", "items": {"type": "object", "properties": {
                            "agent": string(), "device": string(), "local": string()}}},
                        "secrets": {"type": "object", "additionalProperties": {"type": "string"},
                                    "description": "Variable → secret path (→ value when dispatched)."}}},
                    "allocate_data": {"type": "object"},
                    "reserve_data": {"type": "object", "properties": {
                        "ssh_keys": strings(),
                        "timeout": {"type": ["integer", "string", "null"],
                                    "description": "Seconds or a duration such as `2h30m`; default 3600."}}},
                    "job_status_webhook": {"type": "string", "format": "uri"},
                    "job_priority": {"type": "integer"},
                    "exclude_agents": strings(),
                    "debug": {"type": "boolean"},
                },
            },
            "DispatchedJob": {"allOf": [{"$ref": "#/components/schemas/Job"}, {"type": "object", "properties": {
                "started_at": {"type": "string"}, "client_id": string(),
                "attachments_status": {"type": "string", "enum": ["waiting", "complete"]}}}]},
            "JobSummary": {"type": "object", "properties": {
                "job_id": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "job_state": string()}},
            "StatusUpdate": {"type": "object", "required": ["job_status_webhook"], "additionalProperties": false,
                "properties": {"agent_id": string(), "job_queue": string(),
                    "job_status_webhook": {"type": "string", "format": "uri"},
                    "events": {"type": "array", "items": {"type": "object", "required": ["event_name", "timestamp"],
                        "additionalProperties": false,
                        "properties": {"event_name": string(), "timestamp": string(), "detail": string()}}}}},
            "ResultPost": {"type": "object", "additionalProperties": false, "properties": {
                "status": {"type": "object", "propertyNames": {"enum": PHASES},
                           "additionalProperties": {"type": "integer"}},
                "device_info": {"type": "object"},
                "job_state": string()}},
            "ResultGet": result_get,
            "LogPost": {"type": "object", "additionalProperties": false,
                "required": ["fragment_number", "timestamp", "phase", "log_data"],
                "properties": {"fragment_number": {"type": "integer"},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "phase": {"type": "string", "enum": PHASES}, "log_data": string()}},
            "LogGet": {"type": "object", "description": "Log type → phase → fragment summary.",
                "additionalProperties": {"type": "object", "additionalProperties": fragment}},
            "AgentIn": {"type": "object", "additionalProperties": false, "properties": {
                "identifier": string(), "job_id": string(), "location": string(), "provision_type": string(),
                "state": string(), "comment": string(), "queues": strings(),
                "log": {"type": "array", "items": string(), "description": "Lines to append."}}},
            "AgentOut": {"type": "object", "required": ["name"], "properties": {
                "name": string(), "state": string(), "queues": strings(), "location": string(),
                "provision_type": string(), "job_id": string(), "comment": string(), "identifier": string(),
                "updated_at": string(), "provision_streak_type": {"type": "string", "enum": ["pass", "fail"]},
                "provision_streak_count": {"type": "integer"},
                "restricted_to": {"type": "object", "additionalProperties": strings(),
                                  "description": "Restricted queue → owners."}}},
            "RestrictedQueue": {"type": "object", "properties": {"queue": string(), "owners": strings()}},
            "ClientPermissionsIn": {"type": "object", "additionalProperties": false, "properties": {
                "client_secret": {"type": "string", "minLength": 15, "writeOnly": true},
                "max_priority": int_map("Queue (or `*`) → highest job priority."),
                "max_reservation_time": int_map("Queue (or `*`) → longest reservation, seconds."),
                "role": {"type": "string", "enum": ["admin", "manager", "contributor", "agent"]},
                "email": {"type": "string", "format": "email"},
                "agent_names": {"type": "array", "items": {"type": "string", "minLength": 1},
                                "description": "Agent clients (phasebox, admins only): the agent names it may act as."},
                "agent_queues": {"type": "array", "items": {"type": "string", "minLength": 1},
                                 "description": "Agent clients (phasebox, admins only): the queues it may take jobs from."}}},
            "ClientPermissionsOut": {"type": "object", "properties": {
                "client_id": string(),
                "max_priority": int_map("Queue (or `*`) → highest job priority."),
                "allowed_queues": strings(),
                "max_reservation_time": int_map("Queue (or `*`) → longest reservation, seconds."),
                "role": {"type": "string", "enum": ["admin", "manager", "contributor", "agent"]},
                "email": {"type": ["string", "null"]},
                "agent_names": strings(), "agent_queues": strings()}},
            "SecretIn": {"type": "object", "required": ["value"], "additionalProperties": false, "properties": {
                "value": {"type": "string", "minLength": 1, "writeOnly": true},
                "expire_after": {"type": ["integer", "null"], "minimum": 1,
                                 "description": "Seconds; default one year; null: never. Not with `ephemeral`."},
                "ephemeral": {"type": "boolean", "description": "Deleted when first read (at job pickup)."}}},
        },
    })
}
