//! Admin connections to a target with its `sslMode`, through tokio-postgres and the same
//! rustls verification the proxy's upstream leg uses.

use std::path::Path;
use std::time::Duration;

use postern_model::{SecretValue, SslMode, TargetSpec};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::Client;

use crate::error::describe;
use crate::ReconcileError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as the target's admin to `database`; the connection runs on a spawned task.
/// `application_name` shows who is working in `pg_stat_activity`.
pub async fn connect(
    application_name: &str,
    target_label: &str,
    target: &TargetSpec,
    user: &str,
    password: &SecretValue,
    database: &str,
) -> Result<Client, ReconcileError> {
    let fail = |reason: String| ReconcileError::Connect {
        target: target_label.to_owned(),
        database: database.to_owned(),
        reason,
    };
    let (host, port) = target
        .address
        .rsplit_once(':')
        .ok_or_else(|| fail(format!("address {:?} is not host:port", target.address)))?;
    let port: u16 = port
        .parse()
        .map_err(|_| fail(format!("invalid port in {:?}", target.address)))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(port)
        .user(user)
        .password(password.expose())
        .dbname(database)
        .application_name(application_name)
        .connect_timeout(CONNECT_TIMEOUT);
    let client = if target.ssl_mode == SslMode::Disable {
        config.ssl_mode(PgSslMode::Disable);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| fail(describe(&e)))?;
        tokio::spawn(connection);
        client
    } else {
        config.ssl_mode(if target.ssl_mode == SslMode::Prefer {
            PgSslMode::Prefer
        } else {
            PgSslMode::Require
        });
        let tls = postern_proxy::upstream_client_config(
            target.ssl_mode,
            target.ca_file.as_deref().map(Path::new),
        )
        .map_err(|e| fail(e.to_string()))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
        let (client, connection) = config.connect(tls).await.map_err(|e| fail(describe(&e)))?;
        tokio::spawn(connection);
        client
    };
    Ok(client)
}
