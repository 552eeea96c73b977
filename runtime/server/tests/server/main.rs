//! Integration tests: the real server on 127.0.0.1:0, driven over HTTP.
//!
//! * `checklist` — one test per server item 1–28 of the Testflinger compatibility checklist
//!   (reference §8), named `itemNN_…`.
//! * `roles` — the endpoint × role matrix of reference §3.3.
//! * `robustness` — malformed and oversized bodies (clear 4xx, nothing half-stored), restart
//!   with all data intact.
//! * `extensions` — long-poll claims, the event stream, the plugin registry, metrics, claims
//!   under concurrency (no double dispatch).
//! * `replicas` — two servers on one PostgreSQL database, 8 agents, 500 jobs: each dispatched
//!   exactly once (PostgreSQL only).
//! * `openapi` — the OpenAPI document covers every route of the router, and only those.
//! * `tls` — HTTPS with a self-signed certificate; bad certificate and key files.
//! * `security_jobs`, `security_agents`, `security_server` — the attacks of issue 12 that the
//!   server must hold against (named `itemNN_…` after the items): jobs belong to their
//!   submitters, agent credentials to their agents and queues, and server-wide limits.
//!
//! Tests that say so run on PostgreSQL too when PHASEBOX_TEST_POSTGRES_URL is set; with
//! PHASEBOX_REQUIRE_POSTGRES=1 (as in CI) they fail without it instead.

mod checklist;
mod common;
mod extensions;
mod openapi;
mod replicas;
mod robustness;
mod roles;
mod security_agents;
mod security_jobs;
mod security_server;
mod tls;
