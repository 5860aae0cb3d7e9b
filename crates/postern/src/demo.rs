//! `postern demo`: a throwaway PostgreSQL with a sample database, a gateway in front of it
//! with one namespace, target, service and identity, and psql lines that work. Ctrl-C
//! stops everything and removes every temporary file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_config::Config;
use postern_localpg::LocalPg;
use postern_model::{parse_documents, Directory, Format, QualifiedName, SecretValue};
use postern_proxy::Gateway;
use postern_state::{KeySettings, Store};
use tokio::net::TcpListener;

use postern_app::{proxy_settings, runtime, shutdown_signal};

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
        let store = Store::open(
            state_dir.path(),
            &KeySettings {
                inline: None,
                credentials_directory: None,
                key_file: state_dir.path().join("master.key"),
            },
        )?;
        let docs = parse_documents("demo resources", &resources(&pg.address()), Format::Yaml)?;
        store.apply_resources(&docs, false, false)?;
        store.set_secret(NAMESPACE, "app-rw-password", &SecretValue::new(app_password))?;
        let key = store.create_api_key(&QualifiedName::new(NAMESPACE, "alice"))?;

        let listener = bind(config, listen_given).await?;
        let address = listener.local_addr()?;
        let port = address.port();
        let host = if address.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            address.ip().to_string()
        };
        let conninfo = format!(
            "host={host} port={port} dbname=orders.{NAMESPACE} user=alice.{NAMESPACE} password={}",
            key.key.expose()
        );
        println!();
        println!("Postern demo is running: PostgreSQL on {}, the gateway on {address}.", pg.address());
        println!("Identity alice.{NAMESPACE} logs in with an API key; the gateway logs in upstream as app_rw, whose password alice never sees.");
        println!();
        println!("Query through the gateway:");
        println!("  psql \"{conninfo}\" -c \"SELECT current_user, * FROM example\"");
        println!("Interactive session:");
        println!("  psql \"{conninfo}\"");
        println!();
        println!("Press Ctrl-C to stop; everything is removed.");

        let mut settings = proxy_settings(config);
        settings.shutdown_grace = settings.shutdown_grace.min(Duration::from_secs(3));
        let mock_secret = store.mock_auth_secret();
        let directory: Arc<dyn Directory> = Arc::new(store);
        let gateway = Gateway::new(settings, directory, mock_secret, None, None, None, None);
        postern_proxy::serve(listener, gateway, shutdown_signal()?).await;
        drop(orders);
        drop(admin);
        pg.stop();
        drop(state_dir);
        eprintln!("Demo stopped; temporary files removed.");
        Ok(())
    })
}
