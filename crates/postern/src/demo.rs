//! `postern demo`: a throwaway PostgreSQL with a sample database, a gateway in front of it
//! with one namespace, target, service and identity, psql lines that work, and the web UI
//! with a sign-in token and a few statements already in its access log. Ctrl-C stops
//! everything and removes every temporary file.

use std::net::SocketAddr;

use anyhow::Context;
use postern_config::Config;
use postern_localpg::LocalPg;
use postern_model::{parse_documents, Format, QualifiedName, SecretValue};
use tokio::net::TcpListener;

use postern_app::{
    runtime, shutdown_signal, write_bootstrap_token, App, Listeners, BOOTSTRAP_TOKEN_FILE,
};

const NAMESPACE: &str = "demo";

fn resources(address: &str) -> String {
    format!(
        "kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
kind: Target
metadata: {{name: local-pg, namespace: {NAMESPACE}}}
spec: {{address: '{address}', sslMode: disable}}
---
kind: Service
metadata: {{name: orders, namespace: {NAMESPACE}}}
spec:
  target: local-pg
  database: orders
  upstream: {{mode: static, user: app_rw, passwordSecret: app-rw-password}}
---
kind: Identity
metadata: {{name: alice, namespace: {NAMESPACE}}}
spec: {{type: human, groups: [engineering]}}
"
    )
}

async fn bind(config: &Config, listen_given: bool) -> anyhow::Result<TcpListener> {
    if listen_given {
        return TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen));
    }
    // By default the demo stays on loopback: 6432 when free, any port otherwise.
    match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 6432))).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot listen on a loopback port"),
    }
}

/// The admin API (and web UI) on loopback whatever the configuration says (the demo prints
/// an account-admin token for it): 127.0.0.1:8432 when free, any port otherwise.
async fn bind_admin() -> anyhow::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 8432))).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot listen on a loopback port for the admin API"),
    }
}

/// A few statements through the gateway, so the access log a newcomer opens first is not
/// empty.
async fn first_statements(conninfo: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .context("connecting through the gateway")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute("SELECT current_user, * FROM example")
        .await?;
    client
        .query("SELECT item, qty FROM example WHERE qty > $1", &[&4_i32])
        .await?;
    client
        .batch_execute("UPDATE example SET qty = qty + 1 WHERE item = 'apples'")
        .await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

pub fn run(config: &Config, listen_given: bool) -> anyhow::Result<()> {
    runtime(config)?.block_on(async {
        eprintln!("Starting a throwaway PostgreSQL server (initdb into a temporary directory)...");
        let pg = LocalPg::start().await?;
        let app_password = postern_localpg::random_password();
        let admin = pg.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE ROLE app_rw LOGIN PASSWORD '{app_password}'"))
            .await
            .context("creating the sample role")?;
        // CREATE DATABASE cannot share a multi-statement batch.
        admin
            .batch_execute("CREATE DATABASE orders OWNER app_rw")
            .await
            .context("creating the sample database")?;
        let orders = pg.connect("orders").await?;
        orders
            .batch_execute(
                "CREATE TABLE public.example (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
                 INSERT INTO public.example (item, qty) VALUES ('apples', 3), ('pears', 5), ('plums', 8);
                 ALTER TABLE public.example OWNER TO app_rw;",
            )
            .await
            .context("creating the sample table")?;

        let state_dir = tempfile::Builder::new()
            .prefix("postern-demo-")
            .tempdir()
            .context("creating the demo state directory")?;
        let mut config = config.clone();
        config.state_dir = state_dir.path().to_owned();
        config.master_key = None;
        config.master_key_file = None;
        config.api.enabled = true;
        config.shutdown_grace_secs = config.shutdown_grace_secs.min(3);
        let listeners = Listeners {
            proxy: bind(&config, listen_given).await?,
            admin: Some(bind_admin().await?),
        };
        let app = App::build(config.clone()).await?;
        let store = app.store().clone();
        let docs = parse_documents("demo resources", &resources(&pg.address()), Format::Yaml)?;
        store.apply_resources(&docs, false, false)?;
        store.set_secret(NAMESPACE, "app-rw-password", &SecretValue::new(app_password))?;
        let key = store.create_api_key(&QualifiedName::new(NAMESPACE, "alice"), postern_state::unguarded)?;
        write_bootstrap_token(&store, state_dir.path())?;
        let admin_token = std::fs::read_to_string(state_dir.path().join(BOOTSTRAP_TOKEN_FILE))
            .context("reading the demo's admin token")?;

        let address = listeners.proxy.local_addr()?;
        let ui_address = listeners
            .admin
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let host = if address.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            address.ip().to_string()
        };
        let conninfo = format!(
            "host={host} port={} dbname=orders.{NAMESPACE} user=alice.{NAMESPACE} password={}",
            address.port(),
            key.key.expose()
        );
        let introduce = async {
            if let Err(e) = first_statements(&conninfo).await {
                tracing::warn!(error = %format!("{e:#}"), "the demo's first statements failed");
            }
            println!();
            println!("Postern demo is running: PostgreSQL on {}, the gateway on {address}.", pg.address());
            println!("Identity alice.{NAMESPACE} logs in with an API key; the gateway logs in upstream as app_rw, whose password alice never sees.");
            println!();
            println!("Query through the gateway:");
            println!("  psql \"{conninfo}\" -c \"SELECT current_user, * FROM example\"");
            println!("Interactive session:");
            println!("  psql \"{conninfo}\"");
            if let Some(ui) = ui_address {
                println!();
                println!("Web UI (the access log already holds a few statements):");
                let scheme = if config.api.tls { "https" } else { "http" };
                println!("  {scheme}://{ui}/ui/");
                println!("Sign in with this admin token:");
                println!("  {}", admin_token.trim());
            }
            println!();
            println!("Press Ctrl-C to stop; everything is removed.");
        };
        let (served, ()) = tokio::join!(app.run(listeners, None, shutdown_signal()?), introduce);
        served?;
        drop(orders);
        drop(admin);
        pg.stop();
        drop(state_dir);
        eprintln!("Demo stopped; temporary files removed.");
        Ok(())
    })
}
