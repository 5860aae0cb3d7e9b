//! The proxy benchmark driver: starts a throwaway PostgreSQL, pgbouncer and Postern in
//! front of it, and runs pgbench against all three, interleaved, printing a table of
//! medians with each proxy's ratio to direct and CPU µs per transaction.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern_bench::TEN_RULE_DENIALS;
use postern_localpg::LocalPg;

mod fleet;
mod soak;

type Result<T> = std::result::Result<T, String>;

const PASSWORD: &str = "bench-password";

struct Options {
    postern: PathBuf,
    /// Another build of Postern, run as shipped beside this one (`--baseline BIN`).
    baseline: Option<PathBuf>,
    seconds: u32,
    reps: usize,
    quick: bool,
    /// Only these cases, by label (`--case '-S -M prepared -c8'`, repeatable): for profiling.
    only: Vec<String>,
    /// A policy-hook component run on every statement of one more gateway (as shipped
    /// plus the plugin): `--plugin target/plugins/wasm32-wasip2/release/misbehave.wasm`
    /// is a hook that allows everything and asks to be called every time.
    plugin: Option<PathBuf>,
    /// `--soak SECONDS`: the soak (`bench/soak.sh`) instead of the comparison.
    soak: Option<soak::SoakOptions>,
    /// `--fleet`: the state on PostgreSQL against SQLite, and one to three gateways on one
    /// state, instead of the comparison.
    fleet: bool,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        postern: PathBuf::from("target/release/postern"),
        baseline: None,
        seconds: 20,
        reps: 3,
        quick: false,
        only: Vec::new(),
        plugin: None,
        soak: None,
        fleet: false,
    };
    let mut soak = soak::SoakOptions {
        seconds: 0,
        waiting_in_auth: 10_000,
        logged_in: 100,
    };
    let mut soaking = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--postern" => options.postern = PathBuf::from(value("--postern")?),
            "--baseline" => options.baseline = Some(PathBuf::from(value("--baseline")?)),
            "--seconds" => {
                options.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--reps" => {
                options.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--quick" => options.quick = true,
            "--fleet" => options.fleet = true,
            "--case" => options.only.push(value("--case")?),
            "--plugin" => options.plugin = Some(PathBuf::from(value("--plugin")?)),
            "--soak" => {
                soaking = true;
                soak.seconds = value("--soak")?
                    .parse()
                    .map_err(|e| format!("--soak: {e}"))?
            }
            "--waiting-in-auth" => {
                soak.waiting_in_auth = value("--waiting-in-auth")?
                    .parse()
                    .map_err(|e| format!("--waiting-in-auth: {e}"))?
            }
            "--logged-in" => {
                soak.logged_in = value("--logged-in")?
                    .parse()
                    .map_err(|e| format!("--logged-in: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if soaking {
        options.soak = Some(soak);
    }
    Ok(options)
}

/// One pgbench configuration.
struct Case {
    label: String,
    args: Vec<String>,
    clients: u32,
}

fn cases(quick: bool) -> Vec<Case> {
    let client_counts: &[u32] = if quick { &[8] } else { &[1, 8, 32] };
    let mut cases = Vec::new();
    for mode in ["simple", "extended", "prepared"] {
        for &c in client_counts {
            cases.push(Case {
                label: format!("-S -M {mode} -c{c}"),
                args: vec!["-S".into(), "-M".into(), mode.into()],
                clients: c,
            });
        }
    }
    for &c in client_counts {
        cases.push(Case {
            label: format!("TPC-B -c{c}"),
            args: vec![],
            clients: c,
        });
    }
    cases.push(Case {
        label: "-S -C -c8".into(),
        args: vec!["-S".into(), "-C".into()],
        clients: 8,
    });
    cases
}

/// Where pgbench connects, and the process whose CPU time counts for it.
struct Endpoint {
    name: &'static str,
    port: u16,
    user: String,
    dbname: String,
    password: String,
    pid: Option<u32>,
}

struct Sample {
    tps: f64,
    latency_ms: f64,
    cpu_us_per_txn: Option<f64>,
    /// The part of `cpu_us_per_txn` spent by the access log's own threads.
    access_log_us_per_txn: Option<f64>,
    /// CPU time of the whole machine (every process and the kernel) per transaction, and
    /// the share of its time it was idle: how a gateway's cost lands on the whole box.
    box_cpu_us_per_txn: Option<f64>,
    box_idle: Option<f64>,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn pgbench_path() -> PathBuf {
    postern_localpg::tool("pgbench")
}

/// The clock ticks of /proc's CPU times are 100 Hz on Linux.
const MICROS_PER_TICK: f64 = 10_000.0;

/// utime + stime of a process, in microseconds.
fn cpu_micros(pid: u32) -> Option<f64> {
    Some(task_cpu_micros(&format!("/proc/{pid}/stat"))?.1)
}

/// utime + stime, in microseconds, of the gateway's access-log threads (named `audit-…`:
/// the dispatcher and one lane per sink); zero where there are none.
fn access_log_cpu_micros(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|task| task_cpu_micros(&format!("{}/stat", task.path().display())))
            .filter(|(name, _)| name.starts_with("audit-"))
            .map(|(_, micros)| micros)
            .sum(),
    )
}

/// A process's or thread's name and utime + stime in microseconds, from its `stat` file.
fn task_cpu_micros(stat_path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The name, which may contain spaces, is in parentheses; the fields follow.
    let (before, after) = stat.rsplit_once(')')?;
    let name = before.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) * MICROS_PER_TICK))
}

/// The machine's (busy, idle) time over all CPUs since boot, in microseconds, from the
/// first line of /proc/stat (idle counts iowait in).
fn box_micros() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    let total: f64 = ticks.iter().take(8).sum();
    Some((
        (total - idle - iowait) * MICROS_PER_TICK,
        (idle + iowait) * MICROS_PER_TICK,
    ))
}

fn run_pgbench(endpoint: &Endpoint, case: &Case, seconds: u32) -> Result<Sample> {
    let box_before = box_micros();
    let cpu_before = endpoint.pid.and_then(cpu_micros);
    let access_log_before = endpoint.pid.and_then(access_log_cpu_micros);
    let threads = case.clients.min(2);
    let output = Command::new(pgbench_path())
        .args(["-h", "127.0.0.1", "-p", &endpoint.port.to_string()])
        .args(["-U", &endpoint.user, "-n", "-T", &seconds.to_string()])
        .args(["-c", &case.clients.to_string(), "-j", &threads.to_string()])
        .args(&case.args)
        .arg(&endpoint.dbname)
        .env("PGPASSWORD", &endpoint.password)
        .env("PGSSLMODE", "disable")
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let cpu_after = endpoint.pid.and_then(cpu_micros);
    let access_log_after = endpoint.pid.and_then(access_log_cpu_micros);
    let box_after = box_micros();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench against {} failed: {}",
            endpoint.name,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let number_after = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))?
            .trim_start_matches(prefix)
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps = number_after("tps = ").ok_or("no tps in pgbench output")?;
    let latency_ms = number_after("latency average = ").unwrap_or(f64::NAN);
    let transactions = number_after("number of transactions actually processed: ").unwrap_or(0.0);
    let per_txn = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(before), Some(after)) if transactions > 0.0 => Some((after - before) / transactions),
        _ => None,
    };
    let cpu_us_per_txn = per_txn(cpu_before, cpu_after);
    let access_log_us_per_txn = per_txn(access_log_before, access_log_after);
    let (box_cpu_us_per_txn, box_idle) = match (box_before, box_after) {
        (Some((busy_0, idle_0)), Some((busy_1, idle_1))) if transactions > 0.0 => {
            let (busy, idle) = (busy_1 - busy_0, idle_1 - idle_0);
            (Some(busy / transactions), Some(idle / (busy + idle)))
        }
        _ => (None, None),
    };
    Ok(Sample {
        tps,
        latency_ms,
        cpu_us_per_txn,
        access_log_us_per_txn,
        box_cpu_us_per_txn,
        box_idle,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The mean of `values` and the half-width of its 95 % confidence interval (Student's t);
/// `None` for fewer than two finite values.
fn mean_interval(values: &[f64]) -> Option<(f64, f64)> {
    // t at 0.975 for 1 to 30 degrees of freedom; past 30 the normal's 1.96 is close enough.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len();
    if n < 2 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / n as f64;
    let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    Some((mean, t * (variance / n as f64).sqrt()))
}

struct Daemon(Child);

impl Drop for Daemon {
    /// Asks the daemon to stop (so a profiler running it writes its data), and kills it
    /// if it has not stopped within ten seconds.
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal};
        let _ = rustix::process::kill_process(Pid::from_child(&self.0), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening on {port}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn start_pgbouncer(dir: &Path, pg: &LocalPg) -> Result<(Daemon, u16)> {
    let port = free_port()?;
    let ini = dir.join("pgbouncer.ini");
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, format!("\"bench\" \"{PASSWORD}\"\n")).map_err(|e| e.to_string())?;
    std::fs::write(
        &ini,
        format!(
            "[databases]\npgbench = host=127.0.0.1 port={} dbname=pgbench\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {}\npool_mode = session\n\
             max_client_conn = 200\ndefault_pool_size = 40\nlogfile = {}\n",
            pg.port(),
            userlist.display(),
            dir.join("pgbouncer.log").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let bin = if Path::new("/usr/sbin/pgbouncer").exists() {
        PathBuf::from("/usr/sbin/pgbouncer")
    } else {
        PathBuf::from("pgbouncer")
    };
    let mut command = Command::new(bin);
    command
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // pgbouncer refuses to run as root.
    if rustix::process::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postern_localpg::postgres_os_user().map_err(|e| e.to_string())?;
        for path in [dir, &ini, &userlist] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        command.uid(uid).gid(gid);
    }
    let child = command.spawn().map_err(|e| format!("pgbouncer: {e}"))?;
    wait_listening(port, "pgbouncer")?;
    Ok((Daemon(child), port))
}

fn postern_cli(
    bin: &Path,
    state: &Path,
    config: &Path,
    args: &[&str],
    stdin: &str,
) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(bin)
        .env("POSTERN_STATE_DIR", state)
        .env("POSTERN_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("postern: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "postern {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The master key of the `SharedState` gateways (a benchmark's throwaway state).
const FLEET_MASTER_KEY: &str = "cG9zdGVybi1iZW5jaC1mbGVldC1tYXN0ZXIta2V5ISE=";

/// How a benchmarked gateway is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// The default configuration: access log on (state sink), no rules.
    Shipped,
    /// Access log off, no rules: the plain relay.
    Plain,
    /// The default configuration plus ten rules on `pgbench`.
    TenRules,
    /// The default configuration plus a policy-hook plugin on `pgbench`.
    Plugin,
    /// The default configuration with the state in PostgreSQL ([`fleet::STATE_DATABASE`]
    /// on the benchmark's server), as a fleet's gateways keep it.
    SharedState,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Shipped => "postern",
            Profile::Plain => "postern-plain",
            Profile::TenRules => "postern-10-rules",
            Profile::Plugin => "postern-plugin",
            Profile::SharedState => "postern-pg-state",
        }
    }
}

/// A gateway in front of `pg`, configured as `profile` says.
fn start_postern(
    bin: &Path,
    dir: &Path,
    pg: &LocalPg,
    profile: Profile,
    plugin: Option<&Path>,
    serve_flags: &[&str],
) -> Result<(Daemon, u16, String)> {
    let state = dir.join(profile.name());
    let mut resources = format!(
        "kind: Namespace\nmetadata: {{name: bench}}\n---\n\
         kind: Target\nmetadata: {{name: pg, namespace: bench}}\n\
         spec: {{address: '{}', sslMode: disable, admin: {{user: postgres, passwordSecret: pg-admin}}}}\n---\n\
         kind: CredentialRole\nmetadata: {{name: reader, namespace: bench}}\n\
         spec: {{target: pg, database: pgbench, creationStatements: [\
         'CREATE ROLE {{{{name}}}} LOGIN PASSWORD {{{{password}}}} VALID UNTIL {{{{expiration}}}}', \
         'GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}']}}\n---\n\
         kind: Service\nmetadata: {{name: dyn, namespace: bench}}\n\
         spec: {{target: pg, database: pgbench, upstream: {{mode: dynamic, credentialRole: reader}}}}\n---\n\
         kind: Service\nmetadata: {{name: pgbench, namespace: bench}}\n\
         spec:\n  target: pg\n  database: pgbench\n  upstream: {{mode: static, user: bench, passwordSecret: bench-password}}\n{}---\n\
         kind: Identity\nmetadata: {{name: bench, namespace: bench}}\nspec: {{type: workload}}\n",
        pg.address(),
        if profile == Profile::TenRules {
            let rules: String = TEN_RULE_DENIALS
                .iter()
                .map(|(name, condition)| {
                    format!("      - {{name: {name}, effect: DENY, condition: \"{condition}\"}}\n")
                })
                .collect();
            format!(
                "  authorization:\n    rules:\n{rules}      - {{name: the-rest, effect: ALLOW, matchAny: true}}\n"
            )
        } else if profile == Profile::Plugin {
            "  authorization:\n    plugins: [hook]\n".to_owned()
        } else {
            String::new()
        }
    );
    if let (Profile::Plugin, Some(plugin)) = (profile, plugin) {
        resources.push_str(&format!(
            "---\nkind: Plugin\nmetadata: {{name: hook, namespace: bench}}\n\
             spec: {{type: policy, source: {{path: '{}'}}, capabilities: [log]}}\n",
            plugin.display()
        ));
    }
    // As shipped means no configuration file at all.
    let config = dir.join(format!("{}.toml", profile.name()));
    let config_text = match profile {
        Profile::Plain => "[audit]\nenabled = false\n".to_owned(),
        Profile::Shipped | Profile::TenRules | Profile::Plugin => String::new(),
        Profile::SharedState => {
            let password_file = dir.join("state-password");
            std::fs::write(&password_file, pg.superuser_password()).map_err(|e| e.to_string())?;
            format!(
                "master_key = \"{FLEET_MASTER_KEY}\"\n[state]\nbackend = \"postgres\"\n\
                 url = \"host=127.0.0.1 port={} user=postgres dbname={} sslmode=disable\"\n\
                 password_file = \"{}\"\n",
                pg.port(),
                fleet::STATE_DATABASE,
                password_file.display()
            )
        }
    };
    std::fs::write(&config, config_text).map_err(|e| e.to_string())?;
    let file = dir.join("resources.yaml");
    std::fs::write(&file, resources).map_err(|e| e.to_string())?;
    let file = file.to_string_lossy().into_owned();
    postern_cli(bin, &state, &config, &["apply", "-f", &file], "")?;
    postern_cli(
        bin,
        &state,
        &config,
        &["secret", "set", "bench-password", "-n", "bench"],
        PASSWORD,
    )?;
    postern_cli(
        bin,
        &state,
        &config,
        &["secret", "set", "pg-admin", "-n", "bench"],
        pg.superuser_password(),
    )?;
    let key = postern_cli(
        bin,
        &state,
        &config,
        &["identity", "key", "create", "bench", "-n", "bench"],
        "",
    )?
    .trim()
    .to_owned();
    let port = free_port()?;
    let child = Command::new(bin)
        .env("POSTERN_STATE_DIR", &state)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .args(serve_flags)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("{}.log", profile.name())))
                .map_err(|e| e.to_string())?,
        )
        .spawn()
        .map_err(|e| format!("postern serve: {e}"))?;
    wait_listening(port, "postern")?;
    Ok((Daemon(child), port, key))
}

/// A throwaway PostgreSQL loaded with pgbench scale 10, the runtime its client runs on,
/// and a scratch directory named `prefix…`.
fn loaded_postgres(prefix: &str) -> Result<(tokio::runtime::Runtime, LocalPg, tempfile::TempDir)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    eprintln!("starting PostgreSQL and loading pgbench scale 10...");
    let pg = runtime
        .block_on(LocalPg::start())
        .map_err(|e| e.to_string())?;
    runtime.block_on(prepare(&pg))?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| e.to_string())?;
    Ok((runtime, pg, dir))
}

async fn prepare(pg: &LocalPg) -> Result<()> {
    let admin = pg.connect("postgres").await.map_err(|e| e.to_string())?;
    admin
        .batch_execute(&format!("CREATE ROLE bench LOGIN PASSWORD '{PASSWORD}'"))
        .await
        .map_err(|e| e.to_string())?;
    admin
        .batch_execute("CREATE DATABASE pgbench OWNER bench")
        .await
        .map_err(|e| e.to_string())?;
    let output = Command::new(pgbench_path())
        .args([
            "-i",
            "-q",
            "-s",
            "10",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
        ])
        .args(["-U", "bench", "pgbench"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .map_err(|e| format!("pgbench -i: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let options = parse_options()?;
    if let Some(soak) = &options.soak {
        return soak::run(&options.postern, soak);
    }
    if options.fleet {
        return fleet::run(&options.postern, options.seconds, options.reps);
    }
    let (_runtime, pg, dir) = loaded_postgres("postern-bench-")?;
    let (bouncer, bouncer_port) = start_pgbouncer(dir.path(), &pg)?;
    let mut endpoints = vec![
        Endpoint {
            name: "direct",
            port: pg.port(),
            user: "bench".into(),
            dbname: "pgbench".into(),
            password: PASSWORD.into(),
            pid: None,
        },
        Endpoint {
            name: "pgbouncer",
            port: bouncer_port,
            user: "bench".into(),
            dbname: "pgbench".into(),
            password: PASSWORD.into(),
            pid: Some(bouncer.0.id()),
        },
    ];
    let mut gateways = Vec::new();
    for profile in [Profile::Shipped, Profile::Plain, Profile::TenRules] {
        let (daemon, port, key) =
            start_postern(&options.postern, dir.path(), &pg, profile, None, &[])?;
        endpoints.push(Endpoint {
            name: profile.name(),
            port,
            user: "bench.bench".into(),
            dbname: "pgbench.bench".into(),
            password: key,
            pid: Some(daemon.0.id()),
        });
        gateways.push(daemon);
    }
    if let Some(baseline) = &options.baseline {
        let dir = dir.path().join("baseline");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (daemon, port, key) = start_postern(baseline, &dir, &pg, Profile::Shipped, None, &[])?;
        endpoints.push(Endpoint {
            name: "baseline",
            port,
            user: "bench.bench".into(),
            dbname: "pgbench.bench".into(),
            password: key,
            pid: Some(daemon.0.id()),
        });
        gateways.push(daemon);
    }

    let plugin_endpoint = match &options.plugin {
        Some(plugin) => {
            let (daemon, port, key) = start_postern(
                &options.postern,
                dir.path(),
                &pg,
                Profile::Plugin,
                Some(&std::path::absolute(plugin).map_err(|e| e.to_string())?),
                &[],
            )?;
            endpoints.push(Endpoint {
                name: Profile::Plugin.name(),
                port,
                user: "bench.bench".into(),
                dbname: "pgbench.bench".into(),
                password: key,
                pid: Some(daemon.0.id()),
            });
            gateways.push(daemon);
            Some(endpoints.len() - 1)
        }
        None => None,
    };

    let mut cases = cases(options.quick);
    if !options.only.is_empty() {
        cases.retain(|case| options.only.contains(&case.label));
        if cases.is_empty() {
            return Err(format!("no case is labelled {:?}", options.only));
        }
    }
    // samples[case][endpoint] = one Sample per rep
    let mut samples: Vec<Vec<Vec<Sample>>> = cases
        .iter()
        .map(|_| endpoints.iter().map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..options.reps {
        for (c, case) in cases.iter().enumerate() {
            // Each rep starts one target further on, so no target always runs right
            // after the same other one (a run's wake leaves the box in a state: warm or
            // cold caches, PostgreSQL's checkpoints, a sink still writing).
            for e in (0..endpoints.len()).map(|k| (k + rep) % endpoints.len()) {
                let endpoint = &endpoints[e];
                eprintln!(
                    "rep {}/{} {:<24} {}",
                    rep + 1,
                    options.reps,
                    case.label,
                    endpoint.name
                );
                samples[c][e].push(run_pgbench(endpoint, case, options.seconds)?);
            }
        }
    }

    // Ratios are to direct PostgreSQL; "÷ plain" is the price of the access log (and rules).
    println!(
        "| case | direct tps | pgbouncer tps (ratio) | postern as shipped tps (ratio; ÷ plain) | plain tps (ratio) | 10 rules tps (ratio; ÷ plain) | latency ms direct / pgbouncer / shipped / plain / 10 rules | CPU µs/txn pgbouncer / shipped / plain / 10 rules |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, case) in cases.iter().enumerate() {
        let per_endpoint = |value: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
            samples[c]
                .iter()
                .map(|s| median(s.iter().filter_map(value).collect()))
                .collect()
        };
        let tps = per_endpoint(&|x| Some(x.tps));
        let latency = per_endpoint(&|x| Some(x.latency_ms));
        let cpu = per_endpoint(&|x| x.cpu_us_per_txn);
        let join = |values: &[f64], digits: usize| {
            values
                .iter()
                .map(|v| format!("{v:.digits$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {:.0} | {:.0} ({:.2}) | {:.0} ({:.2}; {:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}; {:.2}) | {} | {} |",
            case.label,
            tps[0],
            tps[1],
            tps[1] / tps[0],
            tps[2],
            tps[2] / tps[0],
            tps[2] / tps[3],
            tps[3],
            tps[3] / tps[0],
            tps[4],
            tps[4] / tps[0],
            tps[4] / tps[3],
            join(&latency[..5], 3),
            join(&cpu[1..5], 1),
        );
    }
    println!("\n| case | whole machine: CPU µs/txn (idle %) direct / pgbouncer / shipped / plain / 10 rules | of the gateway's CPU µs/txn, its access-log threads' shipped / 10 rules |");
    println!("|---|---|---|");
    for (c, case) in cases.iter().enumerate() {
        let of = |e: usize, value: &dyn Fn(&Sample) -> Option<f64>| {
            median(samples[c][e].iter().filter_map(value).collect())
        };
        let cells: Vec<String> = (0..5)
            .map(|e| {
                format!(
                    "{:.1} ({:.1})",
                    of(e, &|x| x.box_cpu_us_per_txn),
                    100.0 * of(e, &|x| x.box_idle)
                )
            })
            .collect();
        println!(
            "| {} | {} | {:.1} / {:.1} |",
            case.label,
            cells.join(" / "),
            of(2, &|x| x.access_log_us_per_txn),
            of(4, &|x| x.access_log_us_per_txn)
        );
    }
    // The same ratios rep by rep (targets of a rep run minutes apart at most): their
    // spread is the noise a median of the reps is read against. Their mean, with its 95 %
    // interval, is the paired reading: each rep's ratio compares runs made minutes apart,
    // so a drift of the box between reps cancels out of it.
    println!("\n| case | as shipped ÷ plain, each rep (mean, 95 % interval) | 10 rules ÷ plain, each rep (mean, 95 % interval) |");
    println!("|---|---|---|");
    for (c, case) in cases.iter().enumerate() {
        let each_rep = |e: usize| {
            let ratios: Vec<f64> = samples[c][e]
                .iter()
                .zip(&samples[c][3])
                .map(|(gateway, plain)| gateway.tps / plain.tps)
                .collect();
            let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            match mean_interval(&ratios) {
                Some((mean, half)) => format!(
                    "{} ({mean:.2}, {:.2}–{:.2})",
                    listed.join(" "),
                    mean - half,
                    mean + half
                ),
                None => listed.join(" "),
            }
        };
        println!("| {} | {} | {} |", case.label, each_rep(2), each_rep(4));
    }
    if options.baseline.is_some() {
        println!("\n| case | baseline as shipped tps (ratio) | this build as shipped tps (ratio) | CPU µs/txn baseline / this build |");
        println!("|---|---|---|---|");
        for (c, case) in cases.iter().enumerate() {
            let tps = |e: usize| median(samples[c][e].iter().map(|x| x.tps).collect());
            let cpu = |e: usize| {
                median(
                    samples[c][e]
                        .iter()
                        .filter_map(|x| x.cpu_us_per_txn)
                        .collect(),
                )
            };
            println!(
                "| {} | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.1} / {:.1} |",
                case.label,
                tps(5),
                tps(5) / tps(0),
                tps(2),
                tps(2) / tps(0),
                cpu(5),
                cpu(2)
            );
        }
    }
    if let Some(p) = plugin_endpoint {
        println!("\n| case | policy plugin tps (ratio; ÷ plain; ÷ as shipped) | CPU µs/txn as shipped / policy plugin |");
        println!("|---|---|---|");
        for (c, case) in cases.iter().enumerate() {
            let tps = |e: usize| median(samples[c][e].iter().map(|x| x.tps).collect());
            let cpu = |e: usize| {
                median(
                    samples[c][e]
                        .iter()
                        .filter_map(|x| x.cpu_us_per_txn)
                        .collect(),
                )
            };
            println!(
                "| {} | {:.0} ({:.2}; {:.2}; {:.2}) | {:.1} / {:.1} |",
                case.label,
                tps(p),
                tps(p) / tps(0),
                tps(p) / tps(3),
                tps(p) / tps(2),
                cpu(2),
                cpu(p)
            );
        }
    }
    if !options.only.is_empty() {
        return Ok(());
    }
    // Connect latency of a dynamic-mode service, where every session's role is created
    // (and dropped after it): pgbench -C logs in for every transaction.
    let connect_case = Case {
        label: "-S -C -c1".into(),
        args: vec!["-S".into(), "-C".into()],
        clients: 1,
    };
    let dynamic = Endpoint {
        name: "postern dynamic",
        port: endpoints[2].port,
        user: "bench.bench".into(),
        dbname: "dyn.bench".into(),
        password: endpoints[2].password.clone(),
        pid: endpoints[2].pid,
    };
    let direct = run_pgbench(&endpoints[0], &connect_case, options.seconds)?;
    let fixed = run_pgbench(&endpoints[2], &connect_case, options.seconds)?;
    let per_session = run_pgbench(&dynamic, &connect_case, options.seconds)?;
    println!(
        "\nlogin + one SELECT (pgbench -S -C -c1), ms: direct {:.2}, postern static {:.2}, postern dynamic (a role created and revoked per session) {:.2}",
        direct.latency_ms, fixed.latency_ms, per_session.latency_ms
    );
    drop(gateways);
    drop(bouncer);
    pg.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mean_interval;

    #[test]
    fn the_mean_interval_uses_students_t_and_needs_two_values() {
        assert_eq!(mean_interval(&[0.9]), None);
        assert_eq!(mean_interval(&[0.9, f64::NAN]), None);
        let (mean, half) = mean_interval(&[0.9, 1.1]).unwrap();
        assert!((mean - 1.0).abs() < 1e-12);
        // s = 0.1414, s/√2 = 0.1, t(1) = 12.706
        assert!((half - 1.2706).abs() < 1e-9, "{half}");
        let (mean, half) = mean_interval(&[1.0; 9]).unwrap();
        assert_eq!((mean, half), (1.0, 0.0));
    }
}
