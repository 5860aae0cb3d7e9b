//! The store's test suite runs on both backends: `on_both_backends!` makes each test a
//! SQLite case and a PostgreSQL case (one PostgreSQL 15 server per test binary, a fresh
//! database per case), so the two implementations answer to the same tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use postern_localpg::LocalPg;

use crate::{KeySettings, PostgresSettings, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A store's place, kept so a case can open it again (as a restart does).
pub(crate) struct TestState {
    pub backend: Backend,
    /// The state directory (SQLite) and where the master key file goes (both).
    pub dir: tempfile::TempDir,
    postgres: Option<PostgresSettings>,
}

struct Server {
    pg: LocalPg,
    /// Keeps the runtime the admin connections ran on alive with the server.
    _runtime: tokio::runtime::Runtime,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test runtime");
        let pg = runtime
            .block_on(LocalPg::start())
            .expect("start PostgreSQL for the store's tests");
        Server {
            pg,
            _runtime: runtime,
        }
    })
}

impl TestState {
    pub(crate) fn new(backend: Backend) -> TestState {
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let server = server();
                let database = format!(
                    "state_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                server
                    ._runtime
                    .block_on(async {
                        let admin = server.pg.connect("postgres").await?;
                        admin
                            .batch_execute(&format!("CREATE DATABASE {database}"))
                            .await?;
                        Ok::<_, Box<dyn std::error::Error>>(())
                    })
                    .expect("create the case's database");
                Some(PostgresSettings {
                    url: format!(
                        "host=127.0.0.1 port={} user=postgres dbname={database} sslmode=disable",
                        server.pg.port()
                    ),
                    password: Some(postern_model::SecretValue::new(
                        server.pg.superuser_password(),
                    )),
                    tls: None,
                })
            }
        };
        TestState {
            backend,
            dir,
            postgres,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn key_file(&self) -> PathBuf {
        self.dir.path().join("master.key")
    }

    /// The key settings of the case: a key file in its directory.
    pub(crate) fn keys(&self) -> KeySettings {
        KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: self.key_file(),
        }
    }

    /// Opens the store with the case's key settings.
    pub(crate) fn open(&self) -> Store {
        self.open_with(&self.keys()).expect("open the store")
    }

    pub(crate) fn open_with(&self, keys: &KeySettings) -> Result<Store, crate::StateError> {
        match &self.postgres {
            None => Store::open(self.dir.path(), keys),
            Some(settings) => Store::open_postgres(settings, keys),
        }
    }
}

/// `on_both_backends! { fn name(state) { … } }`: the test `name::sqlite` and
/// `name::postgres`, each with `state` a fresh [`TestState`] of its backend.
macro_rules! on_both_backends {
    ($(fn $name:ident($state:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn case($state: $crate::testing::TestState) $body

                #[test]
                fn sqlite() {
                    case($crate::testing::TestState::new($crate::testing::Backend::Sqlite));
                }

                #[test]
                fn postgres() {
                    case($crate::testing::TestState::new($crate::testing::Backend::Postgres));
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;
