//! Agent documents and provision logs.

use serde_json::{Map, Value};

use super::{Pools, Result, Store};

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
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM agents WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let mut doc: Map<String, Value> = match row {
                Some((d,)) => serde_json::from_str(&d)?,
                None => Map::new(),
            };
            for (k, v) in fields {
                doc.insert(k.clone(), v.clone());
            }
            doc.insert("name".into(), Value::String(name.to_owned()));
            if !log.is_empty() {
                let mut lines: Vec<Value> = match doc.remove("log") {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                lines.extend(log.iter().cloned().map(Value::String));
                let excess = lines.len().saturating_sub(100);
                lines.drain(..excess);
                doc.insert("log".into(), Value::Array(lines));
            }
            sqlx::query(
                "INSERT INTO agents (name, doc, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(Value::Object(doc).to_string())
            .bind(now)
            .execute(&mut *t)
            .await?;
            t.commit().await?;
            Ok(())
        })
    }

    /// Records a provision outcome for an agent (kept even for an unknown agent, as in
    /// Testflinger), then updates the agent's provision streak. Returns whether the agent exists.
    pub async fn provision_log(&self, name: &str, entry: &Map<String, Value>, now: i64) -> Result<bool> {
        tx!(self, t => {
            let row: Option<(String,)> = sqlx::query_as("SELECT doc FROM provision_logs WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *t)
                .await?;
            let mut doc: Map<String, Value> = match row {
                Some((d,)) => serde_json::from_str(&d)?,
                None => Map::new(),
            };
            let mut item = entry.clone();
            item.insert("timestamp".into(), Value::String(crate::clock::iso_z(now)));
            for (k, v) in &item {
                doc.insert(k.clone(), v.clone());
            }
            doc.insert("name".into(), Value::String(name.to_owned()));
            let mut history: Vec<Value> = match doc.remove("provision_log") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            history.push(Value::Object(item));
            let excess = history.len().saturating_sub(100);
            history.drain(..excess);
            doc.insert("provision_log".into(), Value::Array(history));
            sqlx::query(
                "INSERT INTO provision_logs (name, doc, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(Value::Object(doc).to_string())
            .bind(now)
            .execute(&mut *t)
            .await?;
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
