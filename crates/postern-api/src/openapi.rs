//! The OpenAPI 3.1 document of the admin API, built from the same collection table the
//! router dispatches on, so the two cannot drift apart.

use serde_json::{json, Map, Value};

use crate::resources::{collections, Collection};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// The errors every authenticated operation may answer with.
fn with_errors(mut responses: Map<String, Value>, body: bool) -> Value {
    let mut errors = vec![
        ("400", "malformed request"),
        ("401", "missing, invalid, expired or revoked bearer token"),
        ("403", "the caller may see but not do this"),
        ("404", "not found, or not visible to the caller"),
    ];
    if body {
        errors.extend([
            (
                "409",
                "already exists, changed since read (generation), or still in use",
            ),
            ("413", "request body too large"),
            ("422", "the resource is invalid (same checks as apply)"),
        ]);
    }
    for (status, description) in errors {
        responses.insert(status.to_owned(), error_response(description));
    }
    Value::Object(responses)
}

fn responses(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(status, value)| ((*status).to_owned(), value.clone()))
        .collect()
}

/// Resource names are DNS labels (see `postern_model::validate_name`).
const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

fn path_param(name: &str) -> Value {
    let schema = match name {
        "namespace" => json!({"type": "string", "pattern": NAME_PATTERN, "example": "default"}),
        "name" => json!({"type": "string", "pattern": NAME_PATTERN}),
        _ => json!({"type": "string"}),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn list_params() -> Vec<Value> {
    vec![
        json!({"name": "labelSelector", "in": "query", "required": false,
               "description": "comma-separated terms: key=value, key!=value, key, !key",
               "schema": {"type": "string"}}),
        json!({"name": "limit", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 1, "maximum": 500}}),
        json!({"name": "continue", "in": "query", "required": false,
               "description": "the `continue` value of the previous page",
               "schema": {"type": "string"}}),
    ]
}

/// The access log's filters; `paged` adds `before` and `limit`.
fn log_params(paged: bool) -> Vec<Value> {
    let query = |name: &str, description: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "string"}})
    };
    let mut params = vec![
        query("identity", "`name` or `name.namespace`"),
        query("service", "`name` or `name.namespace`"),
        json!({"name": "type", "in": "query", "required": false, "schema": {"type": "string",
            "enum": postern_model::EventType::ALL.map(postern_model::EventType::as_str)}}),
        query("since", "an RFC 3339 time or a duration ago (15m, 2h, 7d)"),
        query("until", "an RFC 3339 time or a duration ago"),
        query("q", "text the statement contains (case-insensitive)"),
        query("session", "a session_id"),
    ];
    if paged {
        params.push(json!({"name": "before", "in": "query", "required": false,
            "description": "the `next` of the previous page", "schema": {"type": "integer"}}));
        params.push(json!({"name": "limit", "in": "query", "required": false,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}));
    }
    params
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn op(summary: &str, params: Vec<Value>, responses: Value, request: Option<Value>) -> Value {
    let mut op = json!({"summary": summary, "parameters": params, "responses": responses});
    if let Some(request) = request {
        op["requestBody"] = request;
    }
    op
}

fn public(mut operation: Value) -> Value {
    operation["security"] = json!([]);
    operation
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let ok = |d: &str, s: &str| json_response(d, s);
    paths.insert(
        "/healthz".into(),
        json!({"get": public(op("liveness", vec![], json!({"200": ok("alive", "Status")}), None))}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": public(op("readiness: the state store answers; whether this gateway leads those sharing its state", vec![],
            json!({"200": ok("ready", "Readiness"), "503": ok("not ready: the state database cannot be reached", "Readiness")}), None))}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": op("Prometheus metrics (needs account-admin or account-reader)", vec![],
            with_errors(responses(&[("200", json!({"description": "text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}))]), false), None)}),
    );
    paths.insert(
        "/.well-known/jwks.json".into(),
        json!({"get": public(op("public keys that verify access tokens", vec![],
            json!({"200": ok("JWK set", "Jwks")}), None))}),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": public(op("this document", vec![],
            json!({"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}), None))}),
    );
    paths.insert(
        "/api/v1/token".into(),
        json!({"post": public(op("OAuth2 client-credentials grant (RFC 6749 §4.4)", vec![],
        json!({
            "200": ok("an access token", "TokenResponse"),
            "400": ok("invalid request or unsupported grant type", "OAuthError"),
            "401": ok("unknown client or wrong secret", "OAuthError"),
            "413": error_response("request body too large"),
        }),
        Some(json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object",
            "required": ["grant_type"],
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                "client_id": {"type": "string"},
                "client_secret": {"type": "string"}
            }}}}}))))}),
    );
    let no_content = json!({"description": "done"});
    paths.insert(
        "/api/v1/tokens/{jti}".into(),
        json!({"delete": op("revoke an access token by its jti", vec![path_param("jti")],
            with_errors(responses(&[("204", no_content.clone())]), false), None)}),
    );
    paths.insert(
        "/api/v1/namespaces".into(),
        json!({
            "get": op("namespaces the caller may read", list_params(),
                with_errors(responses(&[("200", ok("a page", "ResourceList"))]), false), None),
            "post": op("create a namespace (account-admin)", vec![],
                with_errors(responses(&[("201", ok("created", "Resource"))]), true), Some(body("ResourceWrite"))),
        }),
    );
    let ns = || path_param("namespace");
    paths.insert(
        "/api/v1/namespaces/{namespace}".into(),
        json!({
            "get": op("a namespace", vec![ns()],
                with_errors(responses(&[("200", ok("the namespace", "Resource"))]), false), None),
            "put": op("replace a namespace (metadata.generation required)", vec![ns()],
                with_errors(responses(&[("200", ok("replaced", "Resource"))]), true), Some(body("ResourceWrite"))),
            "delete": op("delete an empty namespace (account-admin)", vec![ns()],
                with_errors(responses(&[("204", no_content.clone())]), true), None),
        }),
    );
    for (segment, collection) in collections() {
        let (item, list, write, create) = match collection {
            Collection::Resource(_) => {
                ("Resource", "ResourceList", "ResourceWrite", "ResourceWrite")
            }
            Collection::Secrets => ("Secret", "SecretList", "SecretValue", "SecretCreate"),
        };
        let mut list_parameters = vec![ns()];
        list_parameters.extend(list_params());
        paths.insert(
            format!("/api/v1/namespaces/{{namespace}}/{segment}"),
            json!({
                "get": op(&format!("list {segment}"), list_parameters,
                    with_errors(responses(&[("200", ok("a page", list))]), false), None),
                "post": op(&format!("create one of {segment}"), vec![ns()],
                    with_errors(responses(&[("201", ok("created", item))]), true), Some(body(create))),
            }),
        );
        let replace_summary = match collection {
            Collection::Resource(_) => {
                format!("replace one of {segment} (metadata.generation required)")
            }
            Collection::Secrets => "set a secret's value (write-only: never returned)".to_owned(),
        };
        paths.insert(
            format!("/api/v1/namespaces/{{namespace}}/{segment}/{{name}}"),
            json!({
                "get": op(&format!("one of {segment}"), vec![ns(), path_param("name")],
                    with_errors(responses(&[("200", ok("found", item))]), false), None),
                "put": op(&replace_summary, vec![ns(), path_param("name")],
                    with_errors(responses(&[("200", ok("replaced", item)), ("201", ok("created", item))]), true), Some(body(write))),
                "delete": op(&format!("delete one of {segment}"), vec![ns(), path_param("name")],
                    with_errors(responses(&[("204", no_content.clone())]), true), None),
            }),
        );
    }
    paths.insert(
        "/api/v1/namespaces/{namespace}/plugincomponents/{sha256}".into(),
        json!({"put": op("upload a Plugin's WebAssembly component by its sha256 (stored once per content; namespace-admin in the namespace)",
            vec![ns(), json!({"name": "sha256", "in": "path", "required": true,
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}})],
            with_errors(responses(&[("200", ok("stored", "ComponentStored"))]), true),
            Some(json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})))}),
    );
    let key_id =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert(
        "/api/v1/namespaces/{namespace}/identities/{name}/keys".into(),
        json!({
            "get": op("an identity's API keys (ids and dates; key values are never shown)", vec![ns(), path_param("name")],
                with_errors(responses(&[("200", ok("API keys", "ApiKeyList"))]), false), None),
            "post": op("create an API key (namespace-admin); its value is in this response only", vec![ns(), path_param("name")],
                with_errors(responses(&[("201", ok("created", "ApiKeyCreated"))]), false), None),
        }),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/identities/{name}/keys/{id}".into(),
        json!({"delete": op("revoke an API key", vec![ns(), path_param("name"), key_id],
            with_errors(responses(&[("204", no_content.clone())]), false), None)}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/identities/{name}/clients".into(),
        json!({
            "get": op("an identity's client ids (secrets are never shown)", vec![ns(), path_param("name")],
                with_errors(responses(&[("200", ok("client ids", "ClientList"))]), false), None),
            "post": op("create a client id and secret (namespace-admin); the secret is in this response only", vec![ns(), path_param("name")],
                with_errors(responses(&[("201", ok("created", "ClientCreated"))]), false), None),
        }),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/identities/{name}/clients/{client_id}".into(),
        json!({"delete": op("delete a client id and its secret", vec![ns(), path_param("name"), path_param("client_id")],
            with_errors(responses(&[("204", no_content)]), false), None)}),
    );
    paths.insert(
        "/api/v1/overview".into(),
        json!({"get": op("version, start time, listeners, and what needs attention in the namespaces the caller may read (kind AccessLog, with empty names, for lost access-log events)", vec![],
            with_errors(responses(&[("200", ok("the overview", "Overview"))]), false), None)}),
    );
    let lease_filters = || {
        vec![
            json!({"name": "role", "in": "query", "required": false, "description": "a CredentialRole's name", "schema": {"type": "string"}}),
            json!({"name": "identity", "in": "query", "required": false, "description": "issued for: name.namespace (its sessions' leases) or cli", "schema": {"type": "string"}}),
            json!({"name": "expiringWithin", "in": "query", "required": false, "description": "a duration (15m, 1h)", "schema": {"type": "string"}}),
            json!({"name": "all", "in": "query", "required": false, "description": "ended leases too", "schema": {"type": "boolean"}}),
        ]
    };
    let mut lease_list_params = vec![ns()];
    lease_list_params.extend(lease_filters());
    let lease_id = || json!({"name": "id", "in": "path", "required": true, "description": "namespace/role/suffix, percent-encoded", "schema": {"type": "string"}});
    paths.insert(
        "/api/v1/namespaces/{namespace}/leases".into(),
        json!({"get": op("leases of issued credentials in the namespace", lease_list_params,
            with_errors(responses(&[("200", ok("leases", "LeaseList"))]), false), None)}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/leases/revoke".into(),
        json!({"post": op("revoke every live lease that matches (dryRun: only count them; namespace-admin)", vec![ns()],
            with_errors(responses(&[("200", ok("what was (or would be) revoked", "BulkRevoke")), ("502", error_response("the upstream failed")), ("503", error_response("no credential issuer"))]), true),
            Some(body("BulkRevokeRequest")))}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/leases/{id}".into(),
        json!({"delete": op("revoke a lease now (namespace-admin)", vec![ns(), lease_id()],
            with_errors(responses(&[("200", ok("revoked", "LeaseRevoked")), ("502", error_response("the upstream failed")), ("503", error_response("no credential issuer"))]), true), None)}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/leases/{id}/renew".into(),
        json!({"post": op("extend a lease (never past its maxTtl; namespace-admin)", vec![ns(), lease_id()],
            with_errors(responses(&[("200", ok("renewed", "LeaseRenewed")), ("502", error_response("the upstream failed")), ("503", error_response("no credential issuer"))]), true),
            Some(json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RenewRequest"}}}})))}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/plugins/{name}/runtime".into(),
        json!({"get": op("how a Plugin is doing in this gateway: loaded, healthy, calls, denials, traps, timeouts, call times (the /metrics counters)", vec![ns(), path_param("name")],
            with_errors(responses(&[("200", ok("the plugin's counters", "PluginRuntime"))]), false), None)}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/reconcile-plan".into(),
        json!({"post": op("the SQL the grant reconciler would run to make the namespace's managed roles match their Intents (a dry run; empty: actual equals desired)", vec![ns()],
            with_errors(responses(&[("200", ok("the plan", "ReconcilePlan")), ("502", error_response("an upstream could not be read"))]), false), None)}),
    );
    paths.insert(
        "/api/v1/namespaces/{namespace}/targets/{name}/check".into(),
        json!({"post": op("check that the target's admin login has every right the issuer, reconciler and rotation need (namespace-admin)", vec![ns(), path_param("name")],
            with_errors(responses(&[("200", ok("one line per requirement", "TargetCheck")), ("502", error_response("the upstream failed")), ("503", error_response("no credential issuer"))]), false), None)}),
    );
    paths.insert(
        "/api/v1/whoami".into(),
        json!({"get": op("who the bearer token speaks for and what it may do in each namespace", vec![],
            with_errors(responses(&[("200", ok("the caller", "WhoAmI"))]), false), None)}),
    );
    paths.insert(
        "/api/v1/explain".into(),
        json!({"post": op("the connection simulator: what a login of the identity to the service (and a statement in it) would meet, without connecting", vec![],
            with_errors(responses(&[("200", ok("the decision and why", "Explanation"))]), true),
            Some(body("ExplainRequest")))}),
    );
    paths.insert(
        "/api/v1/logs".into(),
        json!({"get": op("access-log events, newest first, of the namespaces the caller may read", log_params(true),
            with_errors(responses(&[("200", ok("a page of events", "EventPage"))]), false), None)}),
    );
    let mut export_params = log_params(false);
    export_params.push(json!({"name": "format", "in": "query", "required": false,
        "schema": {"type": "string", "enum": ["csv", "ndjson"]}}));
    paths.insert(
        "/api/v1/logs/export".into(),
        json!({"get": op("the newest 10000 events that pass the filters, as a CSV or NDJSON download", export_params,
            with_errors(responses(&[("200", json!({"description": "a file; X-Postern-Truncated is true when it reached 10000 events (older ones may be left out)",
                "headers": {"X-Postern-Truncated": {"schema": {"type": "string", "enum": ["true", "false"]}}},
                "content": {"text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}}))]), false), None)}),
    );
    let mut stream_params = log_params(false);
    stream_params.push(json!({"name": "after", "in": "query", "required": false,
        "description": "send events after this id (default: from now)", "schema": {"type": "integer"}}));
    paths.insert(
        "/api/v1/logs/stream".into(),
        json!({"get": op("follow the access log: one event per line as they are written; `{\"cursor\": id}` lines (at once, then when idle) keep it alive and say where to resume; never ends on its own", stream_params,
            with_errors(responses(&[("200", json!({"description": "newline-delimited JSON events",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}))]), false), None)}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Postern admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Resources by namespace, role bindings, tokens. Errors are {code, message, field}."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"}
            }
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Readiness": {
            "type": "object",
            "required": ["status", "state", "leader"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "unavailable"]},
                "state": {
                    "type": "object",
                    "required": ["backend", "reachable"],
                    "properties": {
                        "backend": {"type": "string", "enum": ["sqlite", "postgres"]},
                        "reachable": {"type": "boolean"}
                    }
                },
                "leader": {"type": "boolean", "description": "runs the reaper, the reconciler and the rotations (always true on SQLite)"}
            }
        },
        "Metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "namespace": {"type": "string", "pattern": NAME_PATTERN},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "generation": {"type": "integer"}
            }
        },
        "Resource": {
            "type": "object",
            "required": ["kind", "metadata", "spec"],
            "properties": {
                "kind": {"type": "string"},
                "metadata": {"$ref": "#/components/schemas/Metadata"},
                "spec": {"type": "object"},
                "status": {
                    "type": "object",
                    "description": "Intents: the last reconcile; Plugin: what the gateway made of it",
                    "required": ["state", "message"],
                    "properties": {
                        "state": {"type": "string"},
                        "message": {"type": "string"},
                        "statement": {"type": ["string", "null"]},
                        "updatedAt": {"type": "integer"}
                    }
                }
            }
        },
        "ResourceWrite": {
            "type": "object",
            "required": ["metadata"],
            "description": "kind is optional (the path names it); spec is the kind's spec, as in resource files",
            "properties": {
                "kind": {"type": "string"},
                "metadata": {"$ref": "#/components/schemas/Metadata"},
                "spec": {"type": "object"}
            }
        },
        "ResourceList": {
            "type": "object",
            "required": ["items", "continue"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}},
                "continue": {"type": ["string", "null"]}
            }
        },
        "Secret": {
            "type": "object",
            "required": ["kind", "metadata", "createdAt", "updatedAt"],
            "description": "a secret's name and dates; its value is never returned",
            "properties": {
                "kind": {"type": "string", "const": "Secret"},
                "metadata": {"$ref": "#/components/schemas/Metadata"},
                "createdAt": {"type": "integer"},
                "updatedAt": {"type": "integer"}
            }
        },
        "SecretList": {
            "type": "object",
            "required": ["items", "continue"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Secret"}},
                "continue": {"type": ["string", "null"]}
            }
        },
        "SecretValue": {
            "type": "object",
            "required": ["value"],
            "properties": {"value": {"type": "string", "minLength": 1}}
        },
        "SecretCreate": {
            "type": "object",
            "required": ["name", "value"],
            "properties": {"name": {"type": "string"}, "value": {"type": "string", "minLength": 1}}
        },
        "ComponentStored": {
            "type": "object",
            "required": ["sha256", "size"],
            "properties": {"sha256": {"type": "string"}, "size": {"type": "integer"}}
        },
        "ClientList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object",
                "required": ["clientId", "createdAt"],
                "properties": {"clientId": {"type": "string"}, "createdAt": {"type": "integer"}}
            }}}
        },
        "ApiKeyList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "createdAt"],
                "properties": {"id": {"type": "string"}, "createdAt": {"type": "integer"}}
            }}}
        },
        "ApiKeyCreated": {
            "type": "object",
            "required": ["id", "identity", "key", "createdAt"],
            "properties": {
                "id": {"type": "string"},
                "identity": {"type": "string"},
                "key": {"type": "string", "description": "shown only in this response"},
                "createdAt": {"type": "integer"}
            }
        },
        "ClientCreated": {
            "type": "object",
            "required": ["clientId", "clientSecret", "identity"],
            "properties": {
                "clientId": {"type": "string"},
                "clientSecret": {"type": "string", "description": "shown only in this response"},
                "identity": {"type": "string"}
            }
        },
        "WhoAmI": {
            "type": "object",
            "required": ["name", "accountAdmin", "accountRoles", "expiresAt", "namespaces", "mayCreateNamespaces"],
            "properties": {
                "name": {"type": "string"},
                "accountAdmin": {"type": "boolean"},
                "accountRoles": {"type": "array", "items": {"type": "string"}},
                "expiresAt": {"type": ["string", "null"], "description": "RFC 3339; null for the bootstrap token"},
                "namespaces": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "roles", "read", "write", "connect"],
                    "properties": {
                        "name": {"type": "string"},
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "read": {"type": "boolean"},
                        "write": {"type": "boolean"},
                        "connect": {"type": "boolean"}
                    }
                }},
                "mayCreateNamespaces": {"type": "boolean"}
            }
        },
        "ExplainRequest": {
            "type": "object",
            "required": ["identity", "service"],
            "additionalProperties": false,
            "properties": {
                "identity": {"type": "string", "description": "name.namespace", "example": "alice.default"},
                "service": {"type": "string", "description": "name.namespace", "example": "orders.default"},
                "statement": {"type": "string"},
                "clientAddress": {"type": "string"},
                "tls": {"type": "boolean"},
                "applicationName": {"type": "string"}
            }
        },
        "Explanation": {
            "type": "object",
            "required": ["connect", "route", "statement", "cli"],
            "properties": {
                "connect": {
                    "type": "object",
                    "required": ["allowed", "reason", "binding", "via"],
                    "properties": {
                        "allowed": {"type": "boolean"},
                        "reason": {"type": "string"},
                        "binding": {"type": ["string", "null"]},
                        "via": {"type": ["string", "null"], "enum": ["binding", "home-namespace", "account-role", null]}
                    }
                },
                "route": {
                    "type": ["object", "null"],
                    "required": ["target", "user", "database", "config", "mode"],
                    "properties": {
                        "target": {"type": "string"},
                        "user": {"type": "string"},
                        "database": {"type": "string"},
                        "config": {"type": ["string", "null"]},
                        "mode": {"type": "string", "enum": ["static", "intents", "dynamic", "dynamicConfig"]}
                    }
                },
                "statement": {
                    "type": ["object", "null"],
                    "required": ["allowed", "rule", "kind", "reason"],
                    "properties": {
                        "allowed": {"type": "boolean"},
                        "rule": {"type": ["string", "null"]},
                        "kind": {"type": ["string", "null"]},
                        "reason": {"type": ["string", "null"]}
                    }
                },
                "cli": {"type": "string", "description": "the same question as a postern explain command"}
            }
        },
        "Event": {
            "type": "object",
            "required": ["id", "time", "type"],
            "description": "an access-log line (see the README's access log section) with its id",
            "properties": {
                "id": {"type": "integer"},
                "time": {"type": "string"},
                "type": {"type": "string"},
                "session_id": {"type": "string"},
                "identity": {"type": "object", "properties": {
                    "name": {"type": "string"}, "namespace": {"type": "string"},
                    "groups": {"type": "array", "items": {"type": "string"}}}},
                "service": {"type": "string"},
                "namespace": {"type": "string"},
                "statement": {"type": "string"},
                "command_tag": {"type": "string"},
                "rows": {"type": "integer"},
                "duration_ms": {"type": "number"},
                "sqlstate": {"type": "string"},
                "error_message": {"type": "string"},
                "rule": {"type": "string"},
                "reason": {"type": "string"},
                "client_address": {"type": "string"},
                "application_name": {"type": "string"}
            }
        },
        "EventPage": {
            "type": "object",
            "required": ["items", "next", "latest"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "next": {"type": ["integer", "null"], "description": "pass as before= for older events"},
                "latest": {"type": "integer", "description": "the newest event id when the page was read: follow the stream with after= it"}
            }
        },
        "Overview": {
            "type": "object",
            "required": ["version", "startedAt", "listeners", "attention"],
            "properties": {
                "version": {"type": "string"},
                "startedAt": {"type": "string"},
                "listeners": {"type": "object", "required": ["proxy", "admin"], "properties": {
                    "proxy": {"type": "string"}, "admin": {"type": "string"}}},
                "attention": {"type": "array", "items": {
                    "type": "object",
                    "required": ["kind", "plural", "namespace", "name", "message"],
                    "properties": {
                        "kind": {"type": "string"}, "plural": {"type": "string"},
                        "namespace": {"type": "string"}, "name": {"type": "string"},
                        "message": {"type": "string"}
                    }
                }}
            }
        },
        "Lease": {
            "type": "object",
            "required": ["id", "credentialRole", "target", "username", "state", "issuedFor", "issuedAt", "expiresAt", "maxExpiresAt", "attempts", "lastError"],
            "properties": {
                "id": {"type": "string"},
                "credentialRole": {"type": "string"},
                "target": {"type": "string"},
                "username": {"type": "string"},
                "state": {"type": "string", "enum": ["creating", "active", "revoking", "revoked", "rolled-back"]},
                "issuedFor": {"type": "string"},
                "issuedAt": {"type": "integer"},
                "expiresAt": {"type": "integer"},
                "maxExpiresAt": {"type": "integer"},
                "attempts": {"type": "integer"},
                "lastError": {"type": ["string", "null"]}
            }
        },
        "LeaseList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Lease"}}}
        },
        "LeaseRevoked": {
            "type": "object",
            "required": ["id", "outcome"],
            "properties": {"id": {"type": "string"}, "outcome": {"type": "string"}}
        },
        "LeaseRenewed": {
            "type": "object",
            "required": ["expiresAt", "capped"],
            "properties": {"expiresAt": {"type": "integer"}, "capped": {"type": "boolean"}}
        },
        "RenewRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"increment": {"type": "string", "description": "a duration (1h); the role's defaultTtl when absent"}}
        },
        "BulkRevokeRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "role": {"type": "string"},
                "identity": {"type": "string"},
                "expiringWithin": {"type": "string"},
                "dryRun": {"type": "boolean"},
                "ids": {"type": "array", "items": {"type": "string"},
                        "description": "required unless dryRun: the dry run's ids; only those still matching are revoked"}
            }
        },
        "BulkRevoke": {
            "type": "object",
            "required": ["count", "ids", "results"],
            "properties": {
                "count": {"type": "integer"},
                "ids": {"type": "array", "items": {"type": "string"}},
                "results": {"type": "array", "items": {"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string"}, "outcome": {"type": "string"}, "error": {"type": "string"}}}}
            }
        },
        "PluginRuntime": {
            "type": "object",
            "required": ["loaded", "type", "counters"],
            "properties": {
                "loaded": {"type": "boolean", "description": "this gateway runs it"},
                "type": {"type": ["string", "null"], "description": "policy, logSink or authProvider"},
                "counters": {
                    "type": "object",
                    "description": "the postern_plugin_* metrics without prefix and _total: generation, calls, denials, traps, timeouts, unhealthy_refusals, verdict_cache_hits, instances_created, healthy (1 or 0), events_lost, call_seconds_p50, call_seconds_p99",
                    "additionalProperties": {"type": "number"}
                }
            }
        },
        "ReconcilePlan": {
            "type": "object",
            "required": ["statements", "problems"],
            "properties": {
                "statements": {"type": "array", "items": {
                    "type": "object",
                    "required": ["place", "sql"],
                    "properties": {"place": {"type": "string", "description": "namespace/target/database"}, "sql": {"type": "string"}}
                }},
                "problems": {"type": "array", "items": {"type": "string"}}
            }
        },
        "TargetCheck": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object",
                "required": ["feature", "requirement", "ok", "fix"],
                "properties": {
                    "feature": {"type": "string"},
                    "requirement": {"type": "string"},
                    "ok": {"type": "boolean"},
                    "fix": {"type": ["string", "null"]}
                }
            }}}
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "const": "Bearer"},
                "expires_in": {"type": "integer"}
            }
        },
        "OAuthError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}
        },
        "Jwks": {
            "type": "object",
            "required": ["keys"],
            "properties": {"keys": {"type": "array", "items": {"type": "object"}}}
        }
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
