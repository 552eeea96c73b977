//! Each template renders with the context its page gives it, without a browser; values are
//! escaped.

use serde_json::{Value, json};

use super::render;

fn page(ctx: Value) -> Value {
    json!({ "title": "T", "who": { "client_id": "alice", "role": "contributor" }, "csrf": "c0ffee", "path": "/x", "page": ctx })
}

fn paging() -> Value {
    json!({ "page": 1, "pages": 2, "prev": null, "next": 2 })
}

const EVIL: &str = "<script>alert(1)</script>";

#[test]
fn every_template_renders_and_escapes() {
    let job = json!({ "job_id": "0b1c6a52-8d3c-4f2e-9a61-3f5d2b7c9e10", "state": "test", "queue": EVIL,
        "agent": "a1", "created": "2026-01-01T00:00:00Z", "started": null, "submitter": "alice", "tags": ["t1"] });
    let agent = json!({ "name": "a1", "state": "offline", "health": "offline", "queues": ["q"], "job_id": null,
        "job_hidden": true, "updated": "2026-01-01T00:00:00Z", "location": EVIL, "provision_type": "noprovision",
        "comment": "", "streak": "" });
    let queue = json!({ "name": "q", "description": EVIL, "waiting": 1, "running": 2, "agents": 1,
        "restricted": true, "owners": ["alice"] });
    let cases = [
        ("error.html", json!({ "status": 401, "message": EVIL, "login": true })),
        ("login.html", json!({ "next": "/jobs", "error": EVIL })),
        (
            "jobs.html",
            json!({ "jobs": [job.clone(), json!({ "job_id": null, "state": "waiting", "queue": "q",
            "submitter": null, "created": "2026-01-01T00:00:00Z" })], "total": 2, "paging": paging(),
            "page_base": "/jobs?", "queues": ["q"], "states": ["active"], "show_submitter": true,
            "filter": { "queue": "q", "state": "", "tag": EVIL, "submitter": "", "q": "" } }),
        ),
        (
            "job.html",
            json!({ "job": job, "can_cancel": true, "live": true, "last_event": 7,
            "phases": [{ "phase": "setup", "started": "2026-01-01T00:00:00Z", "duration": "1.0 s", "status": 0 }],
            "output": [{ "phase": "setup", "text": EVIL }], "serial": [], "device_info": null, "artifact": true,
            "secrets": ["API_TOKEN"], "definition": EVIL }),
        ),
        ("agents.html", json!({ "agents": [agent.clone()] })),
        (
            "agent.html",
            json!({ "agent": agent, "jobs": [{ "job_id": null, "state": "complete", "queue": "q",
            "created": "2026-01-01T00:00:00Z" }] }),
        ),
        ("queues.html", json!({ "queues": [queue.clone()] })),
        ("queue.html", json!({ "queue": queue, "agents": [{ "name": "a1", "state": "waiting" }], "jobs": [] })),
    ];
    for (name, ctx) in cases {
        let html = render(name, &page(ctx)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(html.contains("<main id=\"main\">"), "{name}: no main landmark");
        assert!(html.contains("alice"), "{name}: no visitor");
        assert!(!html.contains(EVIL), "{name}: a value reached the page unescaped");
    }
}

#[test]
fn job_page_offers_cancel_only_when_allowed_and_follows_only_running_jobs() {
    let base = json!({ "job": { "job_id": "j", "state": "complete", "queue": "q", "created": "2026-01-01T00:00:00Z" },
        "can_cancel": false, "live": false, "last_event": 0, "phases": [], "output": [], "serial": [],
        "artifact": false, "secrets": [], "definition": "{}" });
    let html = render("job.html", &page(base.clone())).unwrap();
    assert!(!html.contains("id=\"cancel\""));
    assert!(!html.contains("data-events"));
    let mut running = base;
    running["can_cancel"] = json!(true);
    running["live"] = json!(true);
    running["last_event"] = json!(12);
    let html = render("job.html", &page(running)).unwrap();
    assert!(html.contains("id=\"cancel\""));
    assert!(html.contains("name=\"csrf\" value=\"c0ffee\""));
    assert!(html.contains("data-events=\"/jobs/j/events\" data-after=\"12\" data-phase=\"\""));
}

#[test]
fn times_are_machine_readable() {
    let ctx = json!({ "queues": [], "agents": [{ "name": "a", "state": "waiting", "health": "ok", "queues": [],
        "job_id": null, "job_hidden": false, "updated": "2026-05-01T12:00:00Z", "location": "", "provision_type": "" }] });
    let html = render("agents.html", &page(ctx)).unwrap();
    assert!(html.contains("<time datetime=\"2026-05-01T12:00:00Z\">2026-05-01T12:00:00Z</time>"));
}
