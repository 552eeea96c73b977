//! The templates, embedded in the binary, in one [`minijinja::Environment`]. Templates whose
//! names end in `.html` are auto-escaped: a value from the store (a job's name, a log line, an
//! agent's comment) is text on the page, never markup.

use std::sync::LazyLock;

use minijinja::Environment;
use serde::Serialize;

/// Name and text of every template.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("jobs.html", include_str!("../templates/jobs.html")),
    ("job.html", include_str!("../templates/job.html")),
    ("agents.html", include_str!("../templates/agents.html")),
    ("agent.html", include_str!("../templates/agent.html")),
    ("queues.html", include_str!("../templates/queues.html")),
    ("queue.html", include_str!("../templates/queue.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in TEMPLATES {
        env.add_template(name, text).unwrap_or_else(|e| panic!("template {name} does not parse: {e:#}"));
    }
    env
});

/// Renders template `name` with `ctx`.
pub fn render(name: &str, ctx: &impl Serialize) -> Result<String, minijinja::Error> {
    ENV.get_template(name)?.render(ctx)
}

#[cfg(test)]
pub(crate) mod tests;
