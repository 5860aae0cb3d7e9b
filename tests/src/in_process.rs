//! The whole gateway started in the test's own process (postern-app's `App`), on loopback
//! port 0: no binary to spawn and no log to scrape for the port.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_app::{App, Listeners};
use postern_config::Config;
use postern_model::{parse_documents, Format, QualifiedName, SecretValue};
use postern_state::{unguarded, Store};
use tokio::net::TcpListener;

use crate::{provision_resources, APP_PASSWORD, DB, USER};

/// A running in-process gateway with its own state directory.
pub struct InProcessGateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl InProcessGateway {
    /// Builds and starts the application on the caller's runtime.
    pub async fn start() -> InProcessGateway {
        let dir = tempfile::Builder::new()
            .prefix("postern-in-process-")
            .tempdir()
            .expect("state dir");
        let config = Config {
            state_dir: dir.path().to_owned(),
            shutdown_grace_secs: 5,
            ..Config::default()
        };
        let app = App::build(config).await.expect("build the gateway");
        let store = app.store().clone();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners {
            proxy: TcpListener::bind(loopback).await.expect("bind the proxy"),
            admin: Some(TcpListener::bind(loopback).await.expect("bind the API")),
        };
        let proxy = listeners.proxy.local_addr().expect("proxy address");
        let admin = listeners
            .admin
            .as_ref()
            .expect("admin listener")
            .local_addr()
            .expect("API address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(app.run(listeners, None, async {
            let _ = stopped.await;
        }));
        InProcessGateway {
            proxy,
            admin,
            store,
            stop: Some(stop),
            serving,
            _dir: dir,
        }
    }

    /// The provisioning of [`crate::Gateway::provision`], through the store: a service
    /// `orders` in front of `upstream`, identity `alice`; returns her new API key.
    pub fn provision(&self, upstream: &str) -> String {
        let docs = parse_documents("provision", &provision_resources(upstream), Format::Yaml)
            .expect("resources");
        self.store
            .apply_resources(&docs, false, false)
            .expect("apply");
        self.store
            .set_secret(
                "team-a",
                "app-rw-password",
                &SecretValue::new(APP_PASSWORD.to_owned()),
            )
            .expect("set the secret");
        self.store
            .create_api_key(&QualifiedName::new("team-a", "alice"), unguarded)
            .expect("API key")
            .key
            .expose()
            .to_owned()
    }

    /// libpq connection string through the gateway as alice.
    pub fn conninfo(&self, key: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DB} password={key}",
            self.proxy.port()
        )
    }

    /// Shuts the gateway down as SIGTERM would; returns what `App::run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.serving).await.expect("the gateway task")
    }
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
