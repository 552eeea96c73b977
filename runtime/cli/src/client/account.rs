//! `login`, `secret write`, `secret delete`.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use phasebox_client::{Client, Secret, SecretExpiry};

use super::settings::{self, StoredLogin};
use super::{Connection, explain};
use crate::Verdict;

/// `login`: logs in with the client id and secret key (flags or environment) and keeps the
/// refresh token in the settings file (mode 0600) for this server.
pub async fn login(connection: &Connection) -> anyhow::Result<Verdict> {
    let mut resolved = settings::resolve(&connection.flags(), false)?;
    if resolved.config.credentials.is_none() {
        bail!(
            "Please provide credentials and reattempt login: --client-id and --secret-key, or \
             TESTFLINGER_CLIENT_ID and TESTFLINGER_SECRET_KEY"
        );
    }
    let client = Client::new(resolved.config.clone())?;
    let login = client.login().await.map_err(|e| explain(e, None))?;
    let client_id = login.client_id.clone().unwrap_or_default();
    let Some(refresh) = login.refresh_token else {
        bail!("the server issued no refresh token for client '{client_id}'");
    };
    resolved.settings.auth.insert(
        resolved.server_key.clone(),
        StoredLogin { client_id: login.client_id.clone(), refresh_token: refresh.expose().to_owned() },
    );
    if resolved.settings.server.is_none() {
        resolved.settings.server = Some(resolved.server_key.clone());
    }
    settings::save(&resolved.settings_path, &resolved.settings)?;
    println!("Successfully authenticated as user '{client_id}'");
    eprintln!("Login for {} kept in {}", resolved.server_key, resolved.settings_path.display());
    Ok(Verdict::Success)
}

/// `secret write PATH [VALUE|-] [--expire-after N|-1] [--single-use]`.
pub async fn secret_write(
    client: &Client,
    path: &str,
    value: Option<String>,
    expire_after: Option<i64>,
    single_use: bool,
) -> anyhow::Result<Verdict> {
    let value = match value {
        Some(v) if v != "-" => Secret::new(v),
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("Secret value (end with Ctrl-D):");
            }
            let mut v = String::new();
            std::io::stdin().read_to_string(&mut v).context("reading the secret value from stdin")?;
            let v = Secret::new(v.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&v));
            if v.expose().is_empty() {
                bail!("the secret value is empty");
            }
            v
        }
    };
    let expiry = match (single_use, expire_after) {
        (true, _) => SecretExpiry::SingleUse,
        (false, None) => SecretExpiry::Default,
        (false, Some(-1)) => SecretExpiry::Never,
        (false, Some(n)) if n >= 1 => SecretExpiry::After(n as u64),
        (false, Some(n)) => bail!("--expire-after must be a number of seconds ≥ 1, or -1 for never (got {n})"),
    };
    let client_id = owner(client, "writing").await?;
    let expires_at = client
        .put_secret_with(&client_id, path, &value, expiry)
        .await
        .map_err(|e| explain(e, None).context("Error writing secret"))?;
    println!("Secret '{path}' written successfully");
    match (expiry, expires_at) {
        (SecretExpiry::SingleUse, _) => println!("It will be deleted once the first job using it starts"),
        (_, Some(at)) => println!("It expires at {at}"),
        (_, None) => println!("It does not expire"),
    }
    Ok(Verdict::Success)
}

/// `secret delete PATH`.
pub async fn secret_delete(client: &Client, path: &str) -> anyhow::Result<Verdict> {
    let client_id = owner(client, "deleting").await?;
    client.delete_secret(&client_id, path).await.map_err(|e| explain(e, None).context("Error deleting secret"))?;
    println!("Secret '{path}' deleted successfully");
    Ok(Verdict::Success)
}

async fn owner(client: &Client, doing: &str) -> anyhow::Result<String> {
    match client.client_id().await.map_err(|e| explain(e, None))? {
        Some(id) => Ok(id),
        None => bail!(
            "Error {doing} secret: Authentication is required (run `phasebox login`, or set \
             TESTFLINGER_CLIENT_ID and TESTFLINGER_SECRET_KEY)"
        ),
    }
}
