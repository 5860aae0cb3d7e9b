//! A blocking client of the admin API (the CLI's `--server`). The paths it calls are built
//! from the same templates the router serves ([`paths`]), so the two cannot drift apart.

use serde_json::Value;

/// The API's route templates, and the paths built from them.
pub mod paths {
    pub(crate) const NAMESPACES: &str = "/api/v1/namespaces";
    pub(crate) const NAMESPACE: &str = "/api/v1/namespaces/{namespace}";
    pub(crate) const COLLECTION: &str = "/api/v1/namespaces/{namespace}/{kind}";
    pub(crate) const ITEM: &str = "/api/v1/namespaces/{namespace}/{kind}/{name}";
    pub(crate) const PLUGIN_COMPONENT: &str =
        "/api/v1/namespaces/{namespace}/plugincomponents/{sha256}";
    pub(crate) const IDENTITY_KEYS: &str = "/api/v1/namespaces/{namespace}/identities/{name}/keys";
    pub(crate) const IDENTITY_KEY: &str =
        "/api/v1/namespaces/{namespace}/identities/{name}/keys/{id}";
    pub(crate) const IDENTITY_CLIENTS: &str =
        "/api/v1/namespaces/{namespace}/identities/{name}/clients";
    pub(crate) const IDENTITY_CLIENT: &str =
        "/api/v1/namespaces/{namespace}/identities/{name}/clients/{client_id}";
    pub(crate) const WHOAMI: &str = "/api/v1/whoami";
    pub(crate) const OVERVIEW: &str = "/api/v1/overview";
    pub(crate) const LEASES: &str = "/api/v1/namespaces/{namespace}/leases";
    pub(crate) const LEASES_REVOKE: &str = "/api/v1/namespaces/{namespace}/leases/revoke";
    pub(crate) const LEASE: &str = "/api/v1/namespaces/{namespace}/leases/{id}";
    pub(crate) const LEASE_RENEW: &str = "/api/v1/namespaces/{namespace}/leases/{id}/renew";
    pub(crate) const PLUGIN_RUNTIME: &str = "/api/v1/namespaces/{namespace}/plugins/{name}/runtime";
    pub(crate) const RECONCILE_PLAN: &str = "/api/v1/namespaces/{namespace}/reconcile-plan";
    pub(crate) const TARGET_CHECK: &str = "/api/v1/namespaces/{namespace}/targets/{name}/check";
    pub const EXPLAIN: &str = "/api/v1/explain";
    pub(crate) const LOGS: &str = "/api/v1/logs";
    pub(crate) const LOGS_EXPORT: &str = "/api/v1/logs/export";
    pub(crate) const LOGS_STREAM: &str = "/api/v1/logs/stream";

    /// Bytes a path segment carries as they are (RFC 3986 unreserved); the rest are
    /// percent-encoded, so a name holding `/`, `?` or `#` stays one segment.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');

    fn segment(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
    }

    /// The namespaces, or one of them.
    pub fn namespaces(name: Option<&str>) -> String {
        match name {
            Some(name) => NAMESPACE.replace("{namespace}", &segment(name)),
            None => NAMESPACES.to_owned(),
        }
    }

    /// A collection in a namespace (`plural` as in `identities`, `secrets`), or one item.
    pub fn in_namespace(namespace: &str, plural: &str, name: Option<&str>) -> String {
        let template = if name.is_some() { ITEM } else { COLLECTION };
        template
            .replace("{namespace}", &segment(namespace))
            .replace("{kind}", &segment(plural))
            .replace("{name}", &segment(name.unwrap_or_default()))
    }

    /// Where a Plugin's component is uploaded, by its content address.
    pub fn plugin_component(namespace: &str, sha256: &str) -> String {
        PLUGIN_COMPONENT
            .replace("{namespace}", &segment(namespace))
            .replace("{sha256}", &segment(sha256))
    }
}

/// Why a call did not get an answer, or got an error answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Certificates(String),
    #[error("{method} {url}: {reason}")]
    Transport {
        method: String,
        url: String,
        reason: String,
    },
    /// The API's answer to a failed request: its status and one-line message.
    #[error("{0}")]
    Api(String),
}

/// A caller of one gateway's admin API with one bearer token.
pub struct Client {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `server` (`https://host:8432`) presenting `token`; `ca_pem` are the
    /// roots that verify its certificate when they are not the system's.
    pub fn new(server: &str, token: &str, ca_pem: Option<&[u8]>) -> Result<Client, ClientError> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(pem) = ca_pem {
            let roots = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Certificates(e.to_string()))?;
            if roots.is_empty() {
                return Err(ClientError::Certificates("no certificate in it".to_owned()));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                    .build(),
            );
        }
        Ok(Client {
            base: server.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {}", token.trim()),
            agent: config.build().into(),
        })
    }

    /// `method path` with an optional JSON body: the status and the parsed answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.authorization)
                .call(),
            (method, body) => {
                let request = match method {
                    "PUT" => self.agent.put(&url),
                    "POST" => self.agent.post(&url),
                    other => {
                        return Err(ClientError::Transport {
                            method: other.to_owned(),
                            url,
                            reason: "not a method this client sends".to_owned(),
                        })
                    }
                };
                request
                    .header("Authorization", &self.authorization)
                    .header("Content-Type", "application/json")
                    .send(body.map(Value::to_string).unwrap_or_default())
            }
        };
        let mut response = response.map_err(|e| transport(method, &url, e))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Like [`Client::call`], but an error status becomes the API's one-line message.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, value) = self.call(method, path, body)?;
        if status >= 400 {
            return Err(ClientError::Api(api_message(status, &value)));
        }
        Ok(value)
    }

    /// PUTs `bytes` as `application/octet-stream` (a plugin component).
    pub fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .put(&url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .map_err(|e| transport("PUT", &url, e))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(ClientError::Api(api_message(status, &value)));
        }
        Ok(())
    }
}

/// A call that got no answer.
fn transport(method: &str, url: &str, error: ureq::Error) -> ClientError {
    ClientError::Transport {
        method: method.to_owned(),
        url: url.to_owned(),
        reason: error.to_string(),
    }
}

/// An error answer in one line: status, the field it concerns if any, and the message.
pub fn api_message(status: u16, value: &Value) -> String {
    let message = value["message"].as_str().unwrap_or("no message");
    match value["field"].as_str() {
        Some(field) => format!("{status}: {field}: {message}"),
        None => format!("{status}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::paths;

    #[test]
    fn paths_fill_the_router_templates() {
        assert_eq!(paths::namespaces(None), "/api/v1/namespaces");
        assert_eq!(
            paths::namespaces(Some("team-a")),
            "/api/v1/namespaces/team-a"
        );
        assert_eq!(
            paths::in_namespace("team-a", "identities", None),
            "/api/v1/namespaces/team-a/identities"
        );
        assert_eq!(
            paths::in_namespace("team-a", "secrets", Some("pw")),
            "/api/v1/namespaces/team-a/secrets/pw"
        );
        assert_eq!(
            paths::plugin_component("team-a", "ab12"),
            "/api/v1/namespaces/team-a/plugincomponents/ab12"
        );
        assert_eq!(
            paths::in_namespace("team-a", "secrets", Some("a/b?c")),
            "/api/v1/namespaces/team-a/secrets/a%2Fb%3Fc",
            "a name stays one path segment"
        );
    }
}
