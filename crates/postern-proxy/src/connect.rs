//! The connect phase: an upstream session for an authenticated client. An idle pooled
//! connection when one fits, else a new login, made room for under the target's bounds
//! (least recently used idle connections are closed first) and retried once when the
//! server answers 53300; then the client's session parameters (`application_name` and
//! the like) applied with `set_config`, and what the client is to be told of the session.
//! See <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-START-UP>.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postern_model::UpstreamRoute;
use postern_wire::backend::{
    parameter_status, parse_data_row, parse_error_fields, parse_parameter_status,
};
use postern_wire::frame::try_take_message;
use postern_wire::tags::{backend as be, frontend as fe};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::error::UpstreamError;
use crate::io::{read_message, ReadError};
use crate::pool::{Pool, PoolKey, ServerLimits};
use crate::sql::literal;
use crate::upstream::{login, ForwardedParams, UpstreamConnection};

/// How long closing an evicted connection may wait for the server to let go of it.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Cap on any message while the session is prepared (small rows and statuses only).
const PREPARE_MESSAGE_LIMIT: usize = 64 * 1024;

/// The SQLSTATE of "too many clients already" and "too many connections for role".
const TOO_MANY_CONNECTIONS: &str = "53300";
/// SQLSTATE invalid_password: the upstream refused the password.
const INVALID_PASSWORD: &str = "28P01";

/// What the server allows, asked once per target and upstream user. Every setting is read
/// with `missing_ok`, so servers without one (older releases, compatible databases) answer.
const SERVER_LIMITS_QUERY: &str = "SELECT current_setting('max_connections', true)::int \
     - coalesce(current_setting('superuser_reserved_connections', true)::int, 0) \
     - coalesce(current_setting('reserved_connections', true)::int, 0), \
     (SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = current_user)";

/// An upstream session ready for the client.
pub(crate) struct Connected {
    pub upstream: UpstreamConnection,
    /// Bytes the upstream sent after the ReadyForQuery the client gets.
    pub pending: BytesMut,
    /// ParameterStatus and NoticeResponse messages for the client, with the values the
    /// client's own parameters gave.
    pub greeting: BytesMut,
    /// The ReadyForQuery message, raw.
    pub ready: Bytes,
}

/// Connects the session: a pooled connection for `key` when the service pools, else a
/// new login. Not cancel-safe; the caller bounds it and drops everything on failure.
pub(crate) async fn connect(
    pool: &Pool,
    route: &UpstreamRoute,
    key: &PoolKey,
    params: &ForwardedParams,
    login_timeout: Duration,
    keepalive: Option<Duration>,
) -> Result<Connected, UpstreamError> {
    if route.pool.enabled {
        while let Some(connection) = pool.take(key) {
            debug!("reusing an idle upstream connection");
            let prepared = prepare_within(
                login_timeout,
                &route.address,
                prepare(connection, BytesMut::new(), &params.settable, false),
            );
            match prepared.await {
                Ok((connected, _)) => return Ok(connected),
                Err(Prepare::Refused(e)) => return Err(e),
                // It died while idle: try the next one, or a new login.
                Err(Prepare::Broken(e)) => debug!(error = %e, "idle upstream connection broken"),
            }
        }
    }
    let (connection, pending) =
        login_with_room(pool, route, &params.startup, login_timeout, keepalive).await?;
    let learn = route.pool.enabled && pool.needs_server_limits(&route.address, &route.user);
    let (connected, learned) = prepare_within(
        login_timeout,
        &route.address,
        prepare(connection, pending, &params.settable, learn),
    )
    .await
    .map_err(Prepare::into_error)?;
    if let Some(limits) = learned {
        debug!(?limits, "learned what the upstream allows");
        pool.learn_server_limits(&route.address, &route.user, limits);
    }
    Ok(connected)
}

/// A new login, made room for under the target's bounds; on 53300 every idle connection
/// to the target is closed and the login tried once more; on 28P01 with a rotation in
/// flight, the login is tried once more with the rotation's other password.
async fn login_with_room(
    pool: &Pool,
    route: &UpstreamRoute,
    startup: &[(String, String)],
    login_timeout: Duration,
    keepalive: Option<Duration>,
) -> Result<(UpstreamConnection, BytesMut), UpstreamError> {
    let mut retried = false;
    let mut route = std::borrow::Cow::Borrowed(route);
    loop {
        let room = pool
            .make_room(&route.address, &route.user, route.limits)
            .map_err(|reached| UpstreamError::LimitReached {
                setting: reached.what,
                limit: reached.limit,
            })?;
        if !room.evicted.is_empty() {
            debug!(
                closed = room.evicted.len(),
                "closing idle upstream connections to make room"
            );
        }
        close_all(room.evicted).await;
        let attempt =
            tokio::time::timeout(login_timeout, login(&route, startup, room.slot, keepalive))
                .await
                .map_err(|_| UpstreamError::Timeout {
                    address: route.address.clone(),
                })
                .and_then(|result| result);
        match attempt {
            Err(UpstreamError::Refused { sqlstate, .. })
                if sqlstate == TOO_MANY_CONNECTIONS && !retried =>
            {
                let idle = pool.drain_target(&route.address);
                warn!(
                    target = %route.target,
                    closing_idle = idle.len(),
                    "the upstream has no connection slot left; closing idle connections and retrying once"
                );
                close_all(idle).await;
                retried = true;
            }
            Err(UpstreamError::Refused { sqlstate, .. })
                if sqlstate == INVALID_PASSWORD && route.fallback_password.is_some() =>
            {
                debug!(
                    target = %route.target,
                    "the upstream refused the password; trying the other one of the rotation in flight"
                );
                let other = route.to_mut();
                other.password = other.fallback_password.take();
            }
            other => return other,
        }
    }
}

/// Closes connections and waits (bounded) until each server has let go of it, so its slot
/// is free before the next login.
async fn close_all(connections: Vec<UpstreamConnection>) {
    for mut connection in connections {
        let stream = &mut connection.stream;
        let closing = async {
            stream.write_all(&fe::TERMINATE_MESSAGE).await?;
            stream.flush().await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
    }
}

/// Why preparing a session failed.
enum Prepare {
    /// The server refused one of the client's parameters: the client's error.
    Refused(UpstreamError),
    /// The connection broke.
    Broken(UpstreamError),
}

impl Prepare {
    fn into_error(self) -> UpstreamError {
        match self {
            Prepare::Refused(e) | Prepare::Broken(e) => e,
        }
    }
}

/// `prepare`, given up as broken after `limit`.
async fn prepare_within<T>(
    limit: Duration,
    address: &str,
    prepare: impl std::future::Future<Output = Result<T, Prepare>>,
) -> Result<T, Prepare> {
    tokio::time::timeout(limit, prepare)
        .await
        .unwrap_or_else(|_| {
            Err(Prepare::Broken(UpstreamError::Timeout {
                address: address.to_owned(),
            }))
        })
}

/// `baseline` with the ParameterStatus messages that `changed` overrides replaced.
fn merge_greeting(baseline: &[u8], changed: &[(String, String)]) -> BytesMut {
    let mut rest = BytesMut::from(baseline);
    let mut out = BytesMut::with_capacity(baseline.len());
    while let Ok(Some(message)) = try_take_message(&mut rest, PREPARE_MESSAGE_LIMIT) {
        let overridden = message.tag == be::PARAMETER_STATUS
            && parse_parameter_status(&message.body)
                .is_ok_and(|(name, _)| changed.iter().any(|(n, _)| n == name));
        if !overridden {
            postern_wire::backend::put_message(&mut out, message.tag, |b| {
                b.extend_from_slice(&message.body)
            });
        }
    }
    for (name, value) in changed {
        parameter_status(&mut out, name, value);
    }
    out
}

/// Applies the client's settable parameters that differ from what the server reported
/// (one `set_config` each, in one statement), and reads the server's limits when `learn`:
/// at most one round trip, none when there is nothing to do.
async fn prepare(
    mut upstream: UpstreamConnection,
    mut pending: BytesMut,
    settable: &[(String, String)],
    learn: bool,
) -> Result<(Connected, Option<ServerLimits>), Prepare> {
    let sets: Vec<&(String, String)> = settable
        .iter()
        .filter(|(name, value)| {
            !upstream
                .reported
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
        })
        .collect();
    if sets.is_empty() && !learn {
        let greeting = BytesMut::from(&upstream.greeting[..]);
        let ready = upstream.ready.clone();
        return Ok((
            Connected {
                upstream,
                pending,
                greeting,
                ready,
            },
            None,
        ));
    }
    let broken = |e: UpstreamError| Prepare::Broken(e);
    let mut out = BytesMut::new();
    let mut queries = 0;
    if !sets.is_empty() {
        let calls: Vec<String> = sets
            .iter()
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    literal(name),
                    literal(value)
                )
            })
            .collect();
        frontend::query(&format!("SELECT {}", calls.join(", ")), &mut out)
            .map_err(|e| broken(UpstreamError::Lost(e)))?;
        queries += 1;
    }
    let learn_index = learn.then_some(queries);
    if learn {
        frontend::query(SERVER_LIMITS_QUERY, &mut out)
            .map_err(|e| broken(UpstreamError::Lost(e)))?;
        queries += 1;
    }
    let stream = &mut upstream.stream;
    stream
        .write_all(&out)
        .await
        .map_err(|e| broken(UpstreamError::Lost(e)))?;
    stream
        .flush()
        .await
        .map_err(|e| broken(UpstreamError::Lost(e)))?;

    let (mut current, mut changed, mut refused, mut learned) = (0, Vec::new(), None, None);
    let mut ready = Bytes::new();
    while current < queries {
        let message = match read_message(stream, &mut pending, PREPARE_MESSAGE_LIMIT).await {
            Ok(m) => m,
            Err(ReadError::Eof) => return Err(broken(UpstreamError::Closed)),
            Err(ReadError::Io(e)) => return Err(broken(UpstreamError::Lost(e))),
            Err(ReadError::Wire(e)) => return Err(broken(UpstreamError::Protocol(e))),
        };
        let in_learn = learn_index == Some(current);
        match message.tag {
            be::PARAMETER_STATUS => {
                let (name, value) = parse_parameter_status(&message.body)
                    .map_err(|e| broken(UpstreamError::Protocol(e)))?;
                changed.retain(|(n, _): &(String, String)| n != name);
                changed.push((name.to_owned(), value.to_owned()));
            }
            be::ERROR_RESPONSE if in_learn => debug!("the upstream did not say what it allows"),
            be::ERROR_RESPONSE => {
                let fields = parse_error_fields(&message.body)
                    .map_err(|e| broken(UpstreamError::Protocol(e)))?;
                refused = Some(UpstreamError::Refused {
                    sqlstate: fields.code,
                    message: fields.message,
                });
            }
            be::DATA_ROW if in_learn => {
                let row = parse_data_row(&message.body)
                    .map_err(|e| broken(UpstreamError::Protocol(e)))?;
                let number = |i: usize| {
                    row.get(i)
                        .copied()
                        .flatten()
                        .and_then(|v| v.parse::<u32>().ok())
                };
                // rolconnlimit is -1 for "no limit", which does not parse as u32.
                learned = Some(ServerLimits {
                    capacity: number(0),
                    role_limit: number(1),
                });
            }
            be::READY_FOR_QUERY => {
                current += 1;
                let mut raw = BytesMut::new();
                postern_wire::backend::put_message(&mut raw, be::READY_FOR_QUERY, |b| {
                    b.extend_from_slice(&message.body)
                });
                ready = raw.freeze();
            }
            // Row descriptions, rows of set_config, command tags, notices.
            _ => {}
        }
    }
    if let Some(refused) = refused {
        return Err(Prepare::Refused(refused));
    }
    let greeting = merge_greeting(&upstream.greeting, &changed);
    // Asked once: a server that would not say is not asked again.
    let learned = learn.then(|| learned.unwrap_or_default());
    Ok((
        Connected {
            upstream,
            pending,
            greeting,
            ready,
        },
        learned,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ParameterStatus values of a greeting.
    fn reported(greeting: &[u8]) -> Vec<(String, String)> {
        let mut rest = BytesMut::from(greeting);
        let mut values = Vec::new();
        while let Ok(Some(message)) = try_take_message(&mut rest, PREPARE_MESSAGE_LIMIT) {
            if message.tag == be::PARAMETER_STATUS {
                if let Ok((name, value)) = parse_parameter_status(&message.body) {
                    values.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        values
    }

    #[test]
    fn merged_greeting_replaces_changed_values_and_keeps_the_rest() {
        let mut baseline = BytesMut::new();
        parameter_status(&mut baseline, "application_name", "");
        parameter_status(&mut baseline, "TimeZone", "UTC");
        postern_wire::backend::put_message(&mut baseline, be::NOTICE_RESPONSE, |b| {
            b.extend_from_slice(b"x\0")
        });
        let merged = merge_greeting(&baseline, &[("application_name".into(), "job-7".into())]);
        assert_eq!(
            reported(&merged),
            [
                ("TimeZone".to_owned(), "UTC".to_owned()),
                ("application_name".to_owned(), "job-7".to_owned())
            ]
        );
        let mut rest = merged.clone();
        let mut tags = Vec::new();
        while let Some(message) = try_take_message(&mut rest, PREPARE_MESSAGE_LIMIT).unwrap() {
            tags.push(message.tag);
        }
        assert_eq!(
            tags,
            [
                be::PARAMETER_STATUS,
                be::NOTICE_RESPONSE,
                be::PARAMETER_STATUS
            ],
            "the notice is kept, the overridden status replaced"
        );
        assert_eq!(merge_greeting(&baseline, &[]), baseline);
    }
}
