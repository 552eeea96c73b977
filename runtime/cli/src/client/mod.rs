//! The testflinger-cli verbs: `submit`, `poll`, `status`, `results`, `artifacts`, `cancel`,
//! `list-queues`, ... with testflinger-cli's names, options and output, over
//! [`phasebox_client`]. They work against a phasebox server and a Testflinger server alike.
//!
//! Server and credentials: see [`settings`] (flags > environment > settings file > default).
//! Exit codes follow `main`: 0 done; 1 the job that `poll`/`submit --poll`/`reserve` followed
//! did not pass (cancelled, or a phase exited non-zero); 2 the verb could not do its work.

mod account;
mod jobs;
mod pack;
pub(crate) mod poll;
mod queues;
mod settings;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use phasebox_client::{Client, ClientError};
use serde_json::Value;

use crate::Verdict;

/// Where the server is and who is asking (every client verb takes these).
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// The server [env: PHASEBOX_SERVER, TESTFLINGER_SERVER; default: the settings file's, then
    /// <https://testflinger.canonical.com>].
    #[arg(long)]
    server: Option<String>,
    /// Client id for authentication [env: PHASEBOX_CLIENT_ID, TESTFLINGER_CLIENT_ID].
    #[arg(long = "client-id", visible_alias = "client_id")]
    client_id: Option<String>,
    /// Secret key for the client id [env: PHASEBOX_SECRET_KEY, TESTFLINGER_SECRET_KEY]. Prefer
    /// the environment: arguments are visible to other users of this machine.
    #[arg(long = "secret-key", visible_alias = "secret_key")]
    secret_key: Option<String>,
    /// Allow plain http:// to a server other than loopback (tokens and secrets then cross the
    /// network unencrypted).
    #[arg(long)]
    allow_plain_http: bool,
    /// Extra CA certificates (PEM) to trust for the server [env: PHASEBOX_CA_FILE].
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

impl Connection {
    fn flags(&self) -> settings::Flags {
        settings::Flags {
            server: self.server.clone(),
            client_id: self.client_id.clone(),
            secret_key: self.secret_key.clone(),
            allow_plain_http: self.allow_plain_http,
            ca_file: self.ca_file.clone(),
        }
    }

    /// A client with the resolved configuration (using a stored login when no credentials
    /// are given).
    fn client(&self) -> anyhow::Result<Client> {
        if self.secret_key.is_some() {
            eprintln!(
                "warning: --secret-key is visible to other users in the process list; prefer TESTFLINGER_SECRET_KEY"
            );
        }
        let resolved = settings::resolve(&self.flags(), true)?;
        Ok(Client::new(resolved.config)?)
    }
}

/// Options of `poll` and `poll-serial`.
#[derive(Args, Debug, Clone)]
pub struct PollArgs {
    /// Get the latest output and exit at once.
    #[arg(long, short = 'o')]
    oneshot: bool,
    /// The first fragment to print.
    #[arg(long = "start_fragment", visible_alias = "start-fragment", short = 'f', default_value_t = 0)]
    start_fragment: u64,
    /// Only output stamped at or after this ISO 8601 time.
    #[arg(long = "start_timestamp", visible_alias = "start-timestamp", short = 't')]
    start_timestamp: Option<String>,
    /// Only the output of this phase; stops when the phase has finished.
    #[arg(long, short = 'p', value_parser = phasebox_client::PHASES)]
    phase: Option<String>,
    /// Print the server's log answer as JSON and exit at once.
    #[arg(long)]
    json: bool,
    /// Seconds between two looks at the job.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// The job.
    job_id: String,
}

/// The client verbs (flattened into `phasebox`'s verbs).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Submit a new test job to the server (YAML or JSON, `-` for stdin); prints its id.
    Submit {
        /// The job file, or `-` for stdin.
        filename: String,
        /// Follow the job's output until it ends (as `poll`).
        #[arg(long, short = 'p')]
        poll: bool,
        /// Print only the job id.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Submit even when no agent serving the queue is online.
        #[arg(long)]
        wait_for_available_agents: bool,
        /// The directory relative attachment paths start from (default: the job file's).
        #[arg(long = "attachments-relative-to")]
        attachments_relative_to: Option<PathBuf>,
        /// Seconds between two looks at the job with `--poll`.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Follow a job's output until it is complete: each fragment printed once, the queue
    /// position while it waits, the phase and elapsed time while it runs.
    Poll {
        #[command(flatten)]
        args: PollArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Follow a job's serial console output until it is complete.
    #[command(name = "poll-serial")]
    PollSerial {
        #[command(flatten)]
        args: PollArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the state of a job.
    Status {
        /// The job.
        job_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the results of a job as JSON.
    Results {
        /// The job.
        job_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a job as submitted (JSON).
    Show {
        /// The job.
        job_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Download a job's artifacts tarball.
    Artifacts {
        /// Where to write it.
        #[arg(long, default_value = "artifacts.tgz")]
        filename: PathBuf,
        /// The job.
        job_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cancel a job.
    Cancel {
        /// The job.
        job_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the queues agents advertise.
    #[command(name = "list-queues")]
    ListQueues {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the agents known to the server.
    #[command(name = "list-agents")]
    ListAgents {
        /// Only agents serving this queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
        /// Only agents in this state.
        #[arg(long, short = 's')]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the state of an agent.
    #[command(name = "agent-status")]
    AgentStatus {
        /// The agent.
        agent_name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the agents and jobs of a queue.
    #[command(name = "queue-status")]
    QueueStatus {
        /// The queue.
        queue_name: String,
        /// List the jobs (testflinger-cli's `-v`; `-v` here raises the log level).
        #[arg(long = "list-jobs", short = 'l')]
        list_jobs: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Provision and reserve a device, then follow the job.
    Reserve {
        /// The queue.
        #[arg(long, short = 'q')]
        queue: Option<String>,
        /// The image to provision (a name the queue advertises, or a URL).
        #[arg(long, short = 'i', conflicts_with = "distro")]
        image: Option<String>,
        /// The distro to provision.
        #[arg(long)]
        distro: Option<String>,
        /// SSH keys to let in (`lp:user` or `gh:user`, repeatable).
        #[arg(long = "key", short = 'k')]
        keys: Vec<String>,
        /// Reservation time in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Submit without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Only print the job.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Seconds between two looks at the job.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Write or delete a secret in your namespace (requires authentication).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Log in with a client id and secret key and keep the refresh token (mode 0600) for
    /// later verbs.
    Login {
        #[command(flatten)]
        connection: Connection,
    },
}

/// `secret write` / `secret delete`.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Write a secret value (read from stdin when VALUE is `-` or omitted).
    Write {
        /// The secret's path (letters, digits, `_`, `-`, separated by `/`).
        path: String,
        /// The value; `-` or nothing to read it from stdin (arguments are visible to other users).
        value: Option<String>,
        /// Seconds until it expires; -1 for never (default: the server's, one year).
        #[arg(long, allow_negative_numbers = true, conflicts_with = "single_use")]
        expire_after: Option<i64>,
        /// Delete it once the first job using it has been claimed.
        #[arg(long)]
        single_use: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a secret.
    Delete {
        /// The secret's path.
        path: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a client verb.
pub async fn run(command: ClientCommand) -> anyhow::Result<Verdict> {
    use ClientCommand as C;
    match command {
        C::Submit {
            filename,
            poll,
            quiet,
            wait_for_available_agents,
            attachments_relative_to,
            interval,
            connection,
        } => {
            let opts =
                jobs::SubmitOptions { poll, quiet, wait_for_available_agents, attachments_relative_to, interval };
            jobs::submit(&connection.client()?, &filename, &opts).await
        }
        C::Poll { args, connection } => {
            poll::poll(&connection.client()?, &args, phasebox_client::LogType::Output).await
        }
        C::PollSerial { args, connection } => {
            poll::poll(&connection.client()?, &args, phasebox_client::LogType::Serial).await
        }
        C::Status { job_id, connection } => jobs::status(&connection.client()?, &job_id).await,
        C::Results { job_id, connection } => jobs::results(&connection.client()?, &job_id).await,
        C::Show { job_id, connection } => jobs::show(&connection.client()?, &job_id).await,
        C::Artifacts { filename, job_id, connection } => {
            jobs::artifacts(&connection.client()?, &job_id, &filename).await
        }
        C::Cancel { job_id, connection } => jobs::cancel(&connection.client()?, &job_id).await,
        C::ListQueues { json, connection } => queues::list_queues(&connection.client()?, json).await,
        C::ListAgents { queue, state, json, connection } => {
            queues::list_agents(&connection.client()?, queue.as_deref(), state.as_deref(), json).await
        }
        C::AgentStatus { agent_name, json, connection } => {
            queues::agent_status(&connection.client()?, &agent_name, json).await
        }
        C::QueueStatus { queue_name, list_jobs, json, connection } => {
            queues::queue_status(&connection.client()?, &queue_name, list_jobs, json).await
        }
        C::Reserve { queue, image, distro, keys, timeout, yes, dry_run, interval, connection } => {
            let opts = jobs::ReserveOptions { queue, image, distro, keys, timeout, yes, dry_run, interval };
            jobs::reserve(&connection.client()?, &opts).await
        }
        C::Secret { command: SecretCommand::Write { path, value, expire_after, single_use, connection } } => {
            account::secret_write(&connection.client()?, &path, value, expire_after, single_use).await
        }
        C::Secret { command: SecretCommand::Delete { path, connection } } => {
            account::secret_delete(&connection.client()?, &path).await
        }
        C::Login { connection } => account::login(&connection).await,
    }
}

/// JSON as testflinger-cli prints it: keys sorted, indented by 4.
fn pretty(v: &Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    sorted(v).serialize(&mut ser).expect("JSON values serialise");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// `v` with every object's keys sorted.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Adds what to do to errors a user can act on.
fn explain(e: ClientError, job_id: Option<&str>) -> anyhow::Error {
    let hint = match (&e, job_id) {
        (ClientError::Status { status: 400, .. }, Some(_)) => {
            Some("Invalid job id specified. Check the job id to be sure it is correct".to_owned())
        }
        (ClientError::Auth { status: 401, .. }, _) => Some(
            "this needs authentication: run `phasebox login` or set TESTFLINGER_CLIENT_ID and TESTFLINGER_SECRET_KEY"
                .to_owned(),
        ),
        (ClientError::Auth { status: 403, .. }, _) => Some(
            "the client credentials do not have sufficient permissions for the resource(s) you are trying to access"
                .to_owned(),
        ),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h),
        None => e.into(),
    }
}
