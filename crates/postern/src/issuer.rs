//! The issuer's commands (`creds`, `lease`, `target`, `static-role`); its background work
//! inside `serve` is postern-app's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use postern_issuer::{check_target, Issuer, RevokeOutcome};
use postern_model::{parse_duration, QualifiedName};
use postern_state::Store;

use crate::cli::{
    CredsCommand, CredsOutput, LeaseCommand, Output, StaticRoleCommand, TargetCommand,
};
use crate::resources::print_table;

fn block_on<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn duration_flag(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Duration>> {
    text.map(|t| parse_duration(t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

fn time_text(unix: i64) -> String {
    postern_issuer::render::timestamp(unix)
}

/// Percent-encodes a URI component (RFC 3986 unreserved characters stay).
fn uri_component(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn creds(store: Store, command: CredsCommand) -> anyhow::Result<()> {
    let issuer = Issuer::new(Arc::new(store));
    match command {
        CredsCommand::Issue {
            role,
            namespace,
            ttl,
            output,
        } => {
            let ttl = duration_flag("--ttl", ttl.as_deref())?;
            let role = QualifiedName::new(namespace, role);
            let issued = block_on(issuer.issue(&role, ttl, "cli", "cli"))??;
            let (host, port) = issued
                .address
                .rsplit_once(':')
                .unwrap_or((issued.address.as_str(), "5432"));
            match output {
                CredsOutput::Table => {
                    println!("lease_id:   {}", issued.lease_id);
                    println!("username:   {}", issued.username);
                    println!("password:   {}", issued.password.expose());
                    println!("expires_at: {}", time_text(issued.expires_at));
                    println!("host:       {host}");
                    println!("port:       {port}");
                    println!("database:   {}", issued.database);
                }
                CredsOutput::Json => println!(
                    "{}",
                    serde_json::json!({
                        "lease_id": issued.lease_id,
                        "username": issued.username,
                        "password": issued.password.expose(),
                        "issued_at": issued.issued_at,
                        "expires_at": issued.expires_at,
                        "host": host,
                        "port": port,
                        "database": issued.database,
                    })
                ),
                CredsOutput::Env => {
                    let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
                    println!("PGHOST={}", quote(host));
                    println!("PGPORT={}", quote(port));
                    println!("PGDATABASE={}", quote(&issued.database));
                    println!("PGUSER={}", quote(&issued.username));
                    println!("PGPASSWORD={}", quote(issued.password.expose()));
                    println!("POSTERN_LEASE_ID={}", quote(&issued.lease_id));
                }
                CredsOutput::Uri => println!(
                    "postgresql://{}:{}@{}/{}",
                    uri_component(&issued.username),
                    uri_component(issued.password.expose()),
                    issued.address,
                    uri_component(&issued.database)
                ),
            }
            eprintln!(
                "lease {} expires {}; the password is not stored and not shown again",
                issued.lease_id,
                time_text(issued.expires_at)
            );
            Ok(())
        }
        CredsCommand::Sweep { dry_run } => {
            let orphans = block_on(issuer.sweep(dry_run))??;
            let mut failed = 0;
            for orphan in &orphans {
                let outcome = match &orphan.dropped {
                    None => "orphan (dry run: kept)".to_owned(),
                    Some(Ok(_)) => "dropped".to_owned(),
                    Some(Err(error)) => {
                        failed += 1;
                        format!("drop failed: {error}")
                    }
                };
                println!(
                    "{} on Target {} (CredentialRole {}): {outcome}",
                    orphan.username, orphan.target, orphan.credential_role
                );
            }
            eprintln!("sweep: {} roles without a lease", orphans.len());
            if failed > 0 {
                bail!("{failed} orphan roles could not be dropped");
            }
            Ok(())
        }
    }
}

pub fn lease(store: Store, command: LeaseCommand) -> anyhow::Result<()> {
    let issuer = Issuer::new(Arc::new(store));
    match command {
        LeaseCommand::List { scope, all, output } => {
            let namespace = if scope.all_namespaces {
                None
            } else {
                Some(scope.namespace.as_deref().unwrap_or("default"))
            };
            let leases = issuer.store().list_leases(namespace, all)?;
            if output != Output::Table {
                let rows: Vec<serde_json::Value> = leases
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "id": l.id,
                            "credential_role": l.credential_role.to_string(),
                            "username": l.username,
                            "state": l.state.as_str(),
                            "issued_for": l.issued_for,
                            "issued_at": l.issued_at,
                            "expires_at": l.expires_at,
                            "max_expires_at": l.max_expires_at,
                            "attempts": l.attempts,
                            "last_error": l.last_error,
                        })
                    })
                    .collect();
                let value = serde_json::Value::Array(rows);
                match output {
                    Output::Yaml => print!("{}", serde_yaml_ng::to_string(&value)?),
                    _ => println!("{}", serde_json::to_string_pretty(&value)?),
                }
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".to_owned(),
                "USERNAME".to_owned(),
                "STATE".to_owned(),
                "EXPIRES".to_owned(),
                "FOR".to_owned(),
                "LAST ERROR".to_owned(),
            ]];
            rows.extend(leases.iter().map(|l| {
                vec![
                    l.id.clone(),
                    l.username.clone(),
                    l.state.to_string(),
                    time_text(l.expires_at),
                    l.issued_for.clone(),
                    l.last_error.clone().unwrap_or_default(),
                ]
            }));
            print_table(&rows);
            Ok(())
        }
        LeaseCommand::Renew { id, increment } => {
            let increment = duration_flag("--increment", increment.as_deref())?;
            let renewed = block_on(issuer.renew(&id, increment))??;
            println!(
                "lease {id} now expires {}{}",
                time_text(renewed.expires_at),
                if renewed.capped {
                    " (cut to its maxTtl)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        LeaseCommand::Revoke {
            id,
            prefix,
            namespace,
        } => {
            let results = match (id, prefix) {
                (Some(id), _) => vec![(id.clone(), block_on(issuer.revoke(&id))?)],
                (None, Some(role)) => {
                    block_on(issuer.revoke_prefix(&format!("{namespace}/{role}/")))??
                }
                (None, None) => bail!("give a lease id or --prefix ROLE"),
            };
            let mut failed = 0;
            for (id, result) in &results {
                match result {
                    Ok(RevokeOutcome::Done) => println!("lease {id} revoked"),
                    Ok(RevokeOutcome::AlreadyGone) => {
                        println!("lease {id} revoked (its role was already gone)")
                    }
                    Ok(RevokeOutcome::AlreadyEnded) => println!("lease {id} had already ended"),
                    Err(error) => {
                        failed += 1;
                        eprintln!("error: lease {id}: {error}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} leases not revoked yet; the server's reaper retries them (see `postern lease list`)", results.len());
            }
            Ok(())
        }
    }
}

pub fn target(store: Store, command: TargetCommand) -> anyhow::Result<()> {
    let issuer = Issuer::new(Arc::new(store));
    match command {
        TargetCommand::Check { name, namespace } => {
            let target = QualifiedName::new(namespace, name);
            let items = block_on(check_target(&issuer, &target))??;
            let mut gaps = 0;
            for item in &items {
                let mark = if item.ok { "ok  " } else { "MISSING" };
                println!("{mark:<7} {:<10} {}", item.feature, item.requirement);
                if let Some(fix) = &item.fix {
                    gaps += 1;
                    println!("        fix: {fix}");
                }
            }
            if gaps > 0 {
                bail!("Target {target}: {gaps} requirements not met (fixes above)");
            }
            Ok(())
        }
        TargetCommand::RotateAdmin { name, namespace } => {
            let target = QualifiedName::new(namespace, name);
            block_on(issuer.rotate_admin(&target))??;
            println!("rotated the admin password of Target {target}");
            Ok(())
        }
    }
}

pub fn static_role(store: Store, command: StaticRoleCommand) -> anyhow::Result<()> {
    let issuer = Issuer::new(Arc::new(store));
    match command {
        StaticRoleCommand::Rotate { name, namespace } => {
            let role = QualifiedName::new(namespace, name);
            block_on(issuer.rotate_static_role(&role))??;
            println!("rotated the password of StaticRole {role}");
            Ok(())
        }
    }
}

/// After `apply`: static roles new or changed get their first password at once, so the
/// services using them work without waiting for the server's next check.
pub fn after_apply(store: Store) {
    let issuer = Issuer::new(Arc::new(store));
    match block_on(issuer.rotate_due_static_roles()) {
        Ok(Ok((rotated, failures))) => {
            if rotated > 0 {
                eprintln!("rotated the password of {rotated} static role(s)");
            }
            for failure in failures {
                eprintln!("warning: {failure}");
            }
        }
        Ok(Err(error)) => eprintln!("warning: static role rotation failed: {error}"),
        Err(error) => eprintln!("warning: {error:#}"),
    }
}
