//! The reconciler at scale: a throwaway PostgreSQL with `--tables` tables, a state store
//! with `--identities` identities and an Intents each (SELECT on every table of `public`
//! plus INSERT, UPDATE on one table, so privilege lists differ), then the first reconcile
//! and a no-op second one, timed. Run with `bench/reconcile.sh`.

use std::time::Instant;

use postern_localpg::{LocalPg, SUPERUSER};
use postern_model::{parse_documents, Format, SecretValue};
use postern_reconciler::{reconcile, Options};
use postern_state::{KeySettings, Store};

type Result<T> = std::result::Result<T, String>;

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
        None => Ok(default),
    }
}

async fn run() -> Result<()> {
    let identities = arg("--identities", 1000)?;
    let tables = arg("--tables", 50)?;
    let pg = LocalPg::start().await.map_err(|e| e.to_string())?;
    let admin = pg.connect("postgres").await.map_err(|e| e.to_string())?;
    admin
        .batch_execute("CREATE DATABASE scale")
        .await
        .map_err(|e| e.to_string())?;
    let db = pg.connect("scale").await.map_err(|e| e.to_string())?;
    let ddl: String = (0..tables)
        .map(|t| format!("CREATE TABLE public.t{t} (id serial PRIMARY KEY, v text);"))
        .collect();
    db.batch_execute(&ddl).await.map_err(|e| e.to_string())?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = Store::open(
        dir.path(),
        &KeySettings {
            inline: None,
            credentials_directory: None,
            key_file: dir.path().join("master.key"),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut docs = format!(
        "kind: Namespace\nmetadata: {{name: scale}}\n---\n\
         kind: Target\nmetadata: {{name: pg, namespace: scale}}\n\
         spec: {{address: '{}', sslMode: disable, admin: {{user: {SUPERUSER}, passwordSecret: admin}}}}\n---\n\
         kind: Service\nmetadata: {{name: app, namespace: scale}}\n\
         spec: {{target: pg, database: scale, upstream: {{mode: intents}}}}\n",
        pg.address()
    );
    for i in 0..identities {
        docs.push_str(&format!(
            "---\nkind: Identity\nmetadata: {{name: w{i}, namespace: scale}}\n---\n\
             kind: Intents\nmetadata: {{name: w{i}, namespace: scale}}\n\
             spec: {{identity: w{i}, access: [{{service: app, table: 'public.*', operations: [SELECT]}}, \
             {{service: app, table: public.t{}, operations: [INSERT, UPDATE]}}]}}\n",
            i % tables.max(1)
        ));
    }
    let loaded = parse_documents("scale.yaml", &docs, Format::Yaml).map_err(|e| e.to_string())?;
    store
        .apply_resources(&loaded, false, false)
        .map_err(|e| e.to_string())?;
    store
        .set_secret("scale", "admin", &SecretValue::new(pg.superuser_password()))
        .map_err(|e| e.to_string())?;

    println!("reconciling {identities} identities x {tables} tables on one database");
    for label in ["first run", "no-op run"] {
        let started = Instant::now();
        let report = reconcile(&store, Options::default())
            .await
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        if let Some(problem) = report.problems.first() {
            return Err(format!("{label}: {problem}"));
        }
        println!(
            "{label:>10}: {:>8.2} s, {} statements",
            elapsed.as_secs_f64(),
            report.statements.len()
        );
    }
    let granted: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE c.relnamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    println!("privileges held on public relations afterwards: {granted}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
