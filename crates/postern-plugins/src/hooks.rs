//! The gateway's loaded policy hooks, as the policy engine asks for them: a session binds
//! each plugin its service names, and asks it about each statement synchronously on the
//! relay's own task. A hook's imports never wait on I/O (its world offers only `log`
//! and `cache`), so one poll runs a call to its end; a call that would wait is treated
//! as a failure. Verdicts a plugin marks as reusable are kept per session and statement
//! fingerprint until their TTL ends.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use postern_model::{Denial, HookStatement, PolicyPlugins, SessionFacts, SessionHook};

use crate::bindings::types::{ClientInfo, Decision, Identity, Statement};
use crate::policy::PolicyHook;
use crate::registry::{read, Loaded, Registry};

/// Verdicts one session keeps per plugin.
const KEPT_VERDICTS: usize = 256;

/// Loaded policy hooks. A session binds a plugin by name and looks it up at each
/// statement, so a new version is used from the next statement of every open session,
/// and a plugin that loads after a session started is asked from then on (before, the
/// session is denied).
pub type PolicyHooks = Registry<PolicyHook>;

impl PolicyPlugins for Registry<PolicyHook> {
    fn bind(
        &self,
        namespace: &str,
        name: &str,
        session: &SessionFacts,
    ) -> Option<Box<dyn SessionHook>> {
        Some(Box::new(BoundHook {
            loaded: self.shared(),
            key: (namespace.to_owned(), name.to_owned()),
            rule: format!("plugin:{name}"),
            identity: Identity {
                name: session.identity.name.clone(),
                namespace: session.identity.namespace.clone(),
                groups: session.groups.clone(),
                attributes: session
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                expires_at: None,
            },
            client: ClientInfo {
                peer_address: session.client.address.clone(),
                database: session.service.dotted(),
                user: session.identity.dotted(),
                application_name: session.client.application_name.clone(),
                tls: session.client.tls,
            },
            kept: Mutex::new(HashMap::default()),
        }))
    }
}

/// Runs a future that is expected to finish without waiting; `None` if it would wait.
fn finish_now<F: Future>(future: F) -> Option<F::Output> {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A verdict kept for reuse: which load of the plugin gave it, the denial reason
/// (`None`: allowed) and until when.
struct KeptVerdict {
    load: u64,
    reason: Option<String>,
    until: Instant,
}

/// One plugin bound to one session.
struct BoundHook {
    loaded: Arc<RwLock<Loaded<PolicyHook>>>,
    key: (String, String),
    rule: String,
    identity: Identity,
    client: ClientInfo,
    /// Reusable verdicts by statement fingerprint.
    kept: Mutex<HashMap<u64, KeptVerdict, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for BoundHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundHook")
            .field("plugin", &self.key)
            .finish_non_exhaustive()
    }
}

/// The most of a plugin's reason that reaches a client.
const MAX_REASON_BYTES: usize = 256;

/// A plugin's reason as a client may see it: printable characters only (no NUL to cut
/// the wire message short, no control characters), at most [`MAX_REASON_BYTES`].
fn client_safe(reason: &str) -> String {
    let mut safe = String::new();
    for c in reason.chars().filter(|c| !c.is_control()) {
        if safe.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        safe.push(c);
    }
    safe
}

impl BoundHook {
    fn denial(&self, statement: &HookStatement<'_>, reason: String) -> Denial {
        Denial {
            rule: self.rule.clone(),
            kind: statement.kind.to_owned(),
            reason: Some(client_safe(&reason)),
        }
    }
}

impl SessionHook for BoundHook {
    fn check_connect(&self) -> Result<(), Denial> {
        let refuse = |reason: String| Denial {
            rule: self.rule.clone(),
            kind: "connect".into(),
            reason: Some(client_safe(&reason)),
        };
        let Some(hook) = read(&self.loaded).get(&self.key).cloned() else {
            return Err(refuse(format!(
                "policy plugin {} is not loaded",
                self.key.1
            )));
        };
        let verdict = finish_now(hook.on_connect(&self.identity, &self.client))
            .unwrap_or_else(|| hook.would_wait());
        match verdict.decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(refuse(reason)),
        }
    }

    fn check_statement(&self, statement: &HookStatement<'_>) -> Result<(), Denial> {
        let Some(hook) = read(&self.loaded).get(&self.key).cloned() else {
            let reason = format!("policy plugin {} is not loaded", self.key.1);
            return Err(self.denial(statement, reason));
        };
        let cares = hook
            .spec()
            .statements
            .as_ref()
            .is_none_or(|filter| filter.matches(statement.kind, statement.tables));
        if !cares {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(fingerprint) = statement.fingerprint {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(kept) = kept.get(&fingerprint) {
                if kept.load == hook.load_id() && now < kept.until {
                    hook.stats().cache_hits.fetch_add(1, Ordering::Relaxed);
                    return match &kept.reason {
                        None => Ok(()),
                        Some(reason) => Err(self.denial(statement, reason.clone())),
                    };
                }
            }
        }
        let asked = Statement {
            kind: statement.kind.to_owned(),
            tables: statement.tables.to_vec(),
            functions: statement.functions.to_vec(),
            // 0 is "not folded" for the plugin.
            fingerprint: statement
                .fingerprint
                .map_or(0, |class| class.wrapping_add(1)),
            text: hook.spec().pass_text.then(|| statement.text.to_owned()),
        };
        let verdict = finish_now(hook.on_statement(&self.identity, &asked))
            .unwrap_or_else(|| hook.would_wait());
        let reason = match verdict.decision {
            Decision::Allow => None,
            Decision::Deny(reason) => Some(reason),
        };
        if let (Some(fingerprint), ttl @ 1..) = (statement.fingerprint, verdict.cache_ttl_ms) {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() >= KEPT_VERDICTS && !kept.contains_key(&fingerprint) {
                kept.clear();
            }
            let until = now + Duration::from_millis(u64::from(ttl));
            kept.insert(
                fingerprint,
                KeptVerdict {
                    load: hook.load_id(),
                    reason: reason.clone(),
                    until,
                },
            );
        }
        match reason {
            None => Ok(()),
            Some(reason) => Err(self.denial(statement, reason)),
        }
    }
}
