-- phasebox server store, SQLite dialect. Times are microseconds since the Unix epoch; JSON is TEXT.

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    agent TEXT,
    attachments_status TEXT,
    client_id TEXT,
    job_data TEXT NOT NULL,
    result_data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_waiting ON jobs (queue, priority DESC, seq) WHERE state = 'waiting';
CREATE INDEX jobs_queue ON jobs (queue, seq);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE job_exclusions (
    job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    PRIMARY KEY (job_seq, agent)
);

CREATE TABLE job_tags (
    job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (job_seq, tag)
);
CREATE INDEX job_tags_tag ON job_tags (tag);

CREATE TABLE log_fragments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    log_type TEXT NOT NULL,
    phase TEXT NOT NULL,
    fragment_number INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    log_data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX log_fragments_job ON log_fragments (job_id, log_type, fragment_number);

CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE provision_logs (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    description TEXT,
    images TEXT,
    updated_at INTEGER
);

CREATE TABLE queue_wait_times (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    wait_seconds INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX queue_wait_times_queue ON queue_wait_times (queue);

CREATE TABLE restricted_queues (
    queue TEXT PRIMARY KEY
);

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT,
    role TEXT NOT NULL,
    max_priority TEXT NOT NULL DEFAULT '{}',
    allowed_queues TEXT NOT NULL DEFAULT '[]',
    max_reservation_time TEXT NOT NULL DEFAULT '{}',
    email TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_accessed INTEGER NOT NULL
);

CREATE TABLE secrets (
    namespace TEXT NOT NULL,
    path TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    ephemeral INTEGER NOT NULL,
    expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, path)
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
