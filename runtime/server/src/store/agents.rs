//! Agent documents and provision logs.

use serde_json::{Map, Value};

use super::{Pools, Result, Store};

/// Entries kept in a document's history list (an agent's `log`, a provision log's
/// `provision_log`).
const HISTORY_LIMIT: usize = 100;

/// Reads the JSON document `$name` of `$table` (a table of `name, doc, updated_at`) in
/// transaction `$t`, or an empty one, lets `$update` change it, sets its `name`, and writes it
/// back with `updated_at = $now`.
macro_rules! update_document {
    ($t:ident, $table:literal, $name:expr, $now:expr, $update:expr) => {{
        let row: Option<(String,)> = sqlx::query_as(concat!("SELECT doc FROM ", $table, " WHERE name = $1"))
            .bind($name)
            .fetch_optional(&mut *$t)
            .await?;
        let mut doc: Map<String, Value> = match row {
            Some((d,)) => serde_json::from_str(&d)?,
            None => Map::new(),
        };
        ($update)(&mut doc);
        doc.insert("name".into(), Value::String($name.to_owned()));
        sqlx::query(concat!(
            "INSERT INTO ",
            $table,
            " (name, doc, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at"
        ))
        .bind($name)
        .bind(Value::Object(doc).to_string())
        .bind($now)
        .execute(&mut *$t)
        .await?;
    }};
}

/// The document-with-history update: `fields` replace top-level keys (Testflinger's `$set`),
/// then `appended` is added to the list under `history`, of which the newest
/// [`HISTORY_LIMIT`] entries are kept. Appending nothing leaves the list as it is.
fn set_and_append<'a>(
    doc: &mut Map<String, Value>,
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
    history: &str,
    appended: Vec<Value>,
) {
    for (k, v) in fields {
        doc.insert(k.clone(), v.clone());
    }
    if appended.is_empty() {
        return;
    }
    let mut list = match doc.remove(history) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    list.extend(appended);
    let excess = list.len().saturating_sub(HISTORY_LIMIT);
    list.drain(..excess);
    doc.insert(history.to_owned(), Value::Array(list));
}

impl Store {
    /// An agent's document and `updated_at`.
    pub async fn get_agent(&self, name: &str) -> Result<Option<(Map<String, Value>, i64)>> {
        on!(self, read, p => {
            let row: Option<(String, i64)> = sqlx::query_as("SELECT doc, updated_at FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?;
            row.map(|(doc, at)| Ok((serde_json::from_str(&doc)?, at))).transpose()
        })
    }

    /// All agents, by name.
    pub async fn list_agents(&self) -> Result<Vec<(Map<String, Value>, i64)>> {
        on!(self, read, p => {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT doc, updated_at FROM agents ORDER BY name").fetch_all(p).await?;
            rows.into_iter().map(|(doc, at)| Ok((serde_json::from_str(&doc)?, at))).collect()
        })
    }

    /// Upserts an agent: `$set` of `fields`, `log` lines appended keeping the last 100.
    pub async fn upsert_agent(&self, name: &str, fields: &Map<String, Value>, log: &[String], now: i64) -> Result<()> {
        let lines: Vec<Value> = log.iter().cloned().map(Value::String).collect();
        tx!(self, t => {
            update_document!(t, "agents", name, now, |doc| set_and_append(doc, fields, "log", lines));
            t.commit().await?;
            Ok(())
        })
    }

    /// Records a provision outcome for an agent (kept even for an unknown agent, as in
    /// Testflinger), then updates the agent's provision streak. Returns whether the agent exists.
    pub async fn provision_log(&self, name: &str, entry: &Map<String, Value>, now: i64) -> Result<bool> {
        let mut item = entry.clone();
        item.insert("timestamp".into(), Value::String(crate::clock::iso_z(now)));
        tx!(self, t => {
            update_document!(t, "provision_logs", name, now, |doc| {
                set_and_append(doc, &item, "provision_log", vec![Value::Object(item.clone())])
            });
            let agent: Option<(String,)> = sqlx::query_as("SELECT doc FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let Some((agent,)) = agent else {
                t.commit().await?;
                return Ok(false);
            };
            let mut agent: Map<String, Value> = serde_json::from_str(&agent)?;
            let failed = entry.get("exit_code").and_then(Value::as_i64).unwrap_or(0) != 0;
            let kind = if failed { "fail" } else { "pass" };
            let count = if agent.get("provision_streak_type").and_then(Value::as_str) == Some(kind) {
                agent.get("provision_streak_count").and_then(Value::as_i64).unwrap_or(0) + 1
            } else {
                1
            };
            agent.insert("provision_streak_type".into(), Value::String(kind.into()));
            agent.insert("provision_streak_count".into(), Value::from(count));
            sqlx::query("UPDATE agents SET doc = $1 WHERE name = $2")
                .bind(Value::Object(agent).to_string())
                .bind(name)
                .execute(&mut *t)
                .await?;
            t.commit().await?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn history_keeps_the_newest_entries_and_fields_replace_keys() {
        let mut doc = json!({"state": "waiting", "log": ["a"]}).as_object().unwrap().clone();
        let fields = json!({"state": "test"}).as_object().unwrap().clone();
        let appended: Vec<Value> = (0..HISTORY_LIMIT).map(|i| json!(i.to_string())).collect();
        set_and_append(&mut doc, &fields, "log", appended);
        assert_eq!(doc["state"], "test");
        let log = doc["log"].as_array().unwrap();
        assert_eq!(log.len(), HISTORY_LIMIT);
        assert_eq!(log[0], "0", "the oldest entry went first");
        assert_eq!(log[HISTORY_LIMIT - 1], (HISTORY_LIMIT - 1).to_string());
    }

    #[test]
    fn appending_nothing_leaves_the_history_alone() {
        let mut doc = json!({"log": "not a list"}).as_object().unwrap().clone();
        set_and_append(&mut doc, &Map::new(), "log", Vec::new());
        assert_eq!(doc["log"], "not a list");
    }
}
