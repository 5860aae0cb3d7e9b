//! Who is calling: the bearer token of a request resolved to the caller's access, and
//! the checks every handler makes with it (other tenants' things answer 404, not 403).

use std::fmt;

use axum::http::{header, HeaderMap};
use postern_model::{Access, Permission, Role};
use tracing::debug;

use crate::error::ApiError;
use crate::Api;

/// The caller of a request and what its role bindings allow.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `bootstrap-admin`, or the identity as `name.namespace`.
    pub name: String,
    pub access: Access,
    /// When the access token expires (Unix seconds); `None` for the bootstrap token.
    pub expires_at: Option<i64>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl Api {
    /// The caller, from an access token or the bootstrap admin token; 401 otherwise.
    /// Blocking (state reads), so handlers call it on a blocking thread.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if token.starts_with("pat_") {
            return if self.store.is_admin_token(token)? {
                Ok(Caller {
                    name: "bootstrap-admin".into(),
                    access: Access::account_admin(),
                    expires_at: None,
                })
            } else {
                Err(ApiError::unauthorized())
            };
        }
        let claims = self.tokens.verify(token).map_err(|e| {
            debug!(reason = %e, "bearer token refused");
            match e {
                crate::TokenError::State(e) => ApiError::from(e),
                _ => ApiError::unauthorized(),
            }
        })?;
        let identity = claims.identity();
        let (_, access) = self
            .store
            .access_of(&identity)?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            name: identity.dotted(),
            access,
            expires_at: Some(claims.exp),
        })
    }
}

impl Caller {
    /// Reading in `namespace`: 404 for callers who may not see it.
    pub fn check_read(&self, namespace: &str, what: &dyn fmt::Display) -> Result<(), ApiError> {
        if self.access.allows(namespace, Permission::Read) {
            Ok(())
        } else {
            Err(ApiError::not_found(what))
        }
    }

    /// Changing in `namespace`: 404 when the caller may not see it, 403 when it may only
    /// read it.
    pub fn check_write(&self, namespace: &str, what: &dyn fmt::Display) -> Result<(), ApiError> {
        self.check_read(namespace, what)?;
        if self.access.allows(namespace, Permission::Write) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{self} may not change {what} (needs namespace-admin in {namespace})"
            )))
        }
    }

    /// Writing a binding of `role` in `namespace`.
    pub fn check_grant(&self, namespace: &str, role: Role) -> Result<(), ApiError> {
        if self.access.may_grant(namespace, role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{self} may not grant {role} (it would widen its own access)"
            )))
        }
    }

    pub fn check_account_admin(&self, action: &str) -> Result<(), ApiError> {
        if self.access.is_account_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{self} may not {action} (needs account-admin)"
            )))
        }
    }
}
