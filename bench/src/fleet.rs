//! `--fleet`: the state on PostgreSQL against SQLite through one gateway (connect rate and
//! steady `-S`, interleaved), and `-S` through one, two and three gateways sharing one
//! state (on this 2-core box they share the cores: this shows overhead, not scaling).

use std::path::Path;
use std::process::{Command, Stdio};

use postern_localpg::LocalPg;

use crate::{
    free_port, loaded_postgres, median, run_pgbench, start_postern, wait_listening, Case, Daemon,
    Endpoint, Profile, Result,
};

/// The state database the `SharedState` gateways use, on the benchmark's server.
pub const STATE_DATABASE: &str = "postern_state";

fn case(label: &str, args: &[&str], clients: u32) -> Case {
    Case {
        label: label.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        clients,
    }
}

/// Another gateway on the shared state, with a directory of its own.
fn start_member(bin: &Path, dir: &Path, index: usize) -> Result<(Daemon, u16)> {
    let state = dir.join(format!("member-{index}"));
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let child = Command::new(bin)
        .env("POSTERN_STATE_DIR", &state)
        .env("RUST_LOG", "warn")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(dir.join(format!("{}.toml", Profile::SharedState.name())))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("member-{index}.log")))
                .map_err(|e| e.to_string())?,
        )
        .spawn()
        .map_err(|e| format!("postern serve: {e}"))?;
    wait_listening(port, "postern fleet member")?;
    Ok((Daemon(child), port))
}

/// Transactions committed in the state database so far (PostgreSQL's statistics, which
/// backends report within a second or so: the caller waits that long first).
fn state_transactions(runtime: &tokio::runtime::Runtime, pg: &LocalPg) -> Result<f64> {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    runtime.block_on(async {
        let admin = pg.connect("postgres").await.map_err(|e| e.to_string())?;
        let row = admin
            .query_one(
                "SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = $1",
                &[&STATE_DATABASE],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    })
}

pub fn run(bin: &Path, seconds: u32, reps: usize) -> Result<()> {
    let (runtime, pg, dir) = loaded_postgres("postern-fleet-")?;
    runtime.block_on(async {
        let admin = pg.connect("postgres").await.map_err(|e| e.to_string())?;
        admin
            .batch_execute(&format!("CREATE DATABASE {STATE_DATABASE}"))
            .await
            .map_err(|e| e.to_string())
    })?;
    let endpoint = |name: &'static str, port: u16, key: &str, pid: u32| Endpoint {
        name,
        port,
        user: "bench.bench".into(),
        dbname: "pgbench.bench".into(),
        password: key.to_owned(),
        pid: Some(pid),
    };
    let (sqlite, sqlite_port, sqlite_key) =
        start_postern(bin, dir.path(), &pg, Profile::Shipped, None, &[])?;
    let (shared, shared_port, key) =
        start_postern(bin, dir.path(), &pg, Profile::SharedState, None, &[])?;
    let one = [
        endpoint("sqlite", sqlite_port, &sqlite_key, sqlite.0.id()),
        endpoint("postgres", shared_port, &key, shared.0.id()),
    ];
    let single_cases = [
        case("-S -C -c8", &["-S", "-C"], 8),
        case("-S -M simple -c8", &["-S", "-M", "simple"], 8),
        case("-S -M prepared -c8", &["-S", "-M", "prepared"], 8),
    ];
    let mut samples: Vec<[Vec<crate::Sample>; 2]> = single_cases
        .iter()
        .map(|_| [Vec::new(), Vec::new()])
        .collect();
    // State transactions per client transaction, beyond what an idle gateway makes.
    let idle_start = state_transactions(&runtime, &pg)?;
    std::thread::sleep(std::time::Duration::from_secs(u64::from(seconds)));
    let idle_per_second =
        (state_transactions(&runtime, &pg)? - idle_start - 1.0) / (f64::from(seconds) + 1.5);
    let mut state_load: Vec<Vec<f64>> = single_cases.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for (c, case) in single_cases.iter().enumerate() {
            for (e, endpoint) in one.iter().enumerate() {
                eprintln!(
                    "rep {}/{reps} {:<22} {}",
                    rep + 1,
                    case.label,
                    endpoint.name
                );
                let before = (e == 1)
                    .then(|| state_transactions(&runtime, &pg))
                    .transpose()?;
                let started = std::time::Instant::now();
                let sample = run_pgbench(endpoint, case, seconds)?;
                if let Some(before) = before {
                    let after = state_transactions(&runtime, &pg)?;
                    let elapsed = started.elapsed().as_secs_f64();
                    let transactions = sample.tps * f64::from(seconds);
                    // One of the two reads above is the reader's own transaction.
                    let extra = after - before - 1.0 - idle_per_second * elapsed;
                    state_load[c].push(extra / transactions);
                }
                samples[c][e].push(sample);
            }
        }
    }
    println!(
        "idle gateway: {idle_per_second:.1} state transactions per second (epoch reads, leadership, heartbeat)\n"
    );
    println!("| case | state on SQLite tps | state on PostgreSQL tps (÷ SQLite) | latency ms SQLite / PostgreSQL | CPU µs/txn SQLite / PostgreSQL | state transactions per client transaction |");
    println!("|---|---|---|---|---|---|");
    for (c, case) in single_cases.iter().enumerate() {
        let of = |e: usize, value: &dyn Fn(&crate::Sample) -> Option<f64>| {
            median(samples[c][e].iter().filter_map(value).collect())
        };
        let tps = |e| of(e, &|s| Some(s.tps));
        let latency = |e| of(e, &|s| Some(s.latency_ms));
        let cpu = |e| of(e, &|s| s.cpu_us_per_txn);
        println!(
            "| {} | {:.0} | {:.0} ({:.2}) | {:.2} / {:.2} | {:.1} / {:.1} | {:.3} |",
            case.label,
            tps(0),
            tps(1),
            tps(1) / tps(0),
            latency(0),
            latency(1),
            cpu(0),
            cpu(1),
            median(state_load[c].clone())
        );
    }
    drop(sqlite);

    // The same 12 clients through 1, 2 and 3 gateways on one state.
    let mut members = vec![(shared, shared_port)];
    for index in 1..3 {
        members.push(start_member(bin, dir.path(), index)?);
    }
    println!("\n| gateways | -S -M prepared, 12 clients in all: tps (÷ one gateway) | CPU µs/txn, all gateways |");
    println!("|---|---|---|");
    let mut first = None;
    for count in 1..=3usize {
        let clients = u32::try_from(12 / count).unwrap_or(12);
        let mut totals = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..reps {
            let runs: Vec<(f64, Option<f64>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = members[..count]
                    .iter()
                    .map(|(daemon, port)| {
                        let endpoint = endpoint("fleet", *port, &key, daemon.0.id());
                        let case = case("-S -M prepared", &["-S", "-M", "prepared"], clients);
                        scope.spawn(move || {
                            run_pgbench(&endpoint, &case, seconds)
                                .map(|s| (s.tps, s.cpu_us_per_txn.map(|cpu| cpu * s.tps)))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| "pgbench thread panicked".to_owned())?)
                    .collect::<Result<Vec<_>>>()
            })?;
            let tps: f64 = runs.iter().map(|(tps, _)| tps).sum();
            // CPU per transaction over all gateways: their CPU summed, over all
            // transactions.
            let cpu: f64 = runs
                .iter()
                .filter_map(|(_, weighted)| *weighted)
                .sum::<f64>()
                / tps;
            totals.push(tps);
            cpus.push(cpu);
        }
        let tps = median(totals);
        let base = *first.get_or_insert(tps);
        println!(
            "| {count} | {tps:.0} ({:.2}) | {:.1} |",
            tps / base,
            median(cpus)
        );
    }
    drop(members);
    pg.stop();
    Ok(())
}
