//! A log sink: each batch of access-log events becomes one OTLP/HTTP JSON request
//! (`POST {endpoint}/v1/logs`), one log record per event with the event's JSON line as
//! its body and its routing fields as attributes. 2xx: written. 408, 429, 5xx or no
//! answer: the gateway keeps the batch and retries it. Any other status: refused for
//! good. With `authorization_secret`, that Secret's value is sent as `Authorization`.

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

use postern_plugin_sdk::log_sink::{Event, Guest, SinkError};
use postern_plugin_sdk::{host, HttpError, Level, Request};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `http://collector:4318`: the path `/v1/logs` is added.
    endpoint: String,
    #[serde(default = "default_service_name")]
    service_name: String,
    #[serde(default)]
    authorization_secret: Option<String>,
}

fn default_service_name() -> String {
    "postern".into()
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn text(value: &str) -> Value {
    json!({ "stringValue": value })
}

fn attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": text(value) })
}

/// The OTLP JSON request body for `events`.
fn body(settings: &Settings, events: &[Event]) -> Vec<u8> {
    let records: Vec<Value> = events
        .iter()
        .map(|event| {
            let nanos = (event.time_ms.max(0) as u64).saturating_mul(1_000_000);
            let mut attributes = vec![
                attribute("postern.event.id", &event.id),
                attribute("postern.event.type", &event.event_type),
                attribute("postern.session.id", &event.session_id),
                attribute("postern.identity", &event.identity),
                attribute("postern.service", &event.service),
            ];
            if let Some(statement) = &event.statement {
                attributes.push(attribute("db.statement", statement));
            }
            json!({
                "timeUnixNano": nanos.to_string(),
                "severityNumber": 9,
                "severityText": "INFO",
                "body": text(&event.json),
                "attributes": attributes,
            })
        })
        .collect();
    let document = json!({
        "resourceLogs": [{
            "resource": { "attributes": [attribute("service.name", &settings.service_name)] },
            "scopeLogs": [{
                "scope": { "name": "postern.access-log" },
                "logRecords": records,
            }],
        }],
    });
    document.to_string().into_bytes()
}

struct OtlpLogs;

impl Guest for OtlpLogs {
    fn init(config: String) -> Result<(), String> {
        let settings: Settings = postern_plugin_sdk::config(&config)?;
        if !settings.endpoint.starts_with("http://") && !settings.endpoint.starts_with("https://") {
            return Err("config: endpoint must be an http:// or https:// URL".into());
        }
        host::log(
            Level::Info,
            &format!("sending access-log events to {}/v1/logs", settings.endpoint),
        );
        SETTINGS
            .set(settings)
            .map_err(|_| "init called twice".to_string())
    }

    fn write_batch(events: Vec<Event>) -> Result<(), SinkError> {
        let settings = SETTINGS
            .get()
            .ok_or_else(|| SinkError::Retryable("not initialised".into()))?;
        export(settings, &events)
    }
}

/// Sends `events` to the collector in one request.
fn export(settings: &Settings, events: &[Event]) -> Result<(), SinkError> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(name) = &settings.authorization_secret {
        let value = host::secret(name)
            .map_err(|e| SinkError::Permanent(format!("secret {name}: {e:?}")))?;
        headers.push(("authorization".into(), value));
    }
    let request = Request {
        method: "POST".into(),
        url: format!("{}/v1/logs", settings.endpoint.trim_end_matches('/')),
        headers,
        body: body(settings, events),
        timeout_ms: 0,
    };
    match host::http_send(&request) {
        Ok(response) if (200..300).contains(&response.status) => Ok(()),
        Ok(response) if matches!(response.status, 408 | 429 | 500..=599) => Err(
            SinkError::Retryable(format!("collector answered {}", response.status)),
        ),
        Ok(response) => Err(SinkError::Permanent(format!(
            "collector answered {}",
            response.status
        ))),
        Err(HttpError::Denied) => Err(SinkError::Retryable(
            "the endpoint is not in the plugin's http.allow".into(),
        )),
        Err(e) => Err(SinkError::Retryable(format!("{e:?}"))),
    }
}

postern_plugin_sdk::log_sink::export_log_sink!(OtlpLogs);

#[cfg(test)]
mod tests {
    use postern_plugin_sdk::log_sink::{Event, SinkError};
    use postern_plugin_sdk::testing::{requests, FakeHost};

    use super::{export, Settings};

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            time_ms: 1_700_000_000_000,
            event_type: "QUERY".into(),
            session_id: "s1".into(),
            identity: "alice.default".into(),
            service: "shop.default".into(),
            statement: Some("select 1".into()),
            json: format!(r#"{{"id":"{id}"}}"#),
        }
    }

    fn settings() -> Settings {
        postern_plugin_sdk::config(
            r#"{"endpoint": "http://collector.test:4318/", "authorization_secret": "otlp-token"}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_batch_is_one_request_with_the_secret_as_authorization() {
        let url = "http://collector.test:4318/v1/logs";
        FakeHost::new()
            .secret("otlp-token", "Bearer abc")
            .http_response("POST", url, 200, b"{}")
            .install();
        assert_eq!(export(&settings(), &[event("1"), event("2")]), Ok(()));
        let sent = requests();
        assert_eq!(sent.len(), 1);
        assert!(sent[0]
            .headers
            .contains(&("authorization".into(), "Bearer abc".into())));
        let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
        let records = &body["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
        assert_eq!(records.as_array().map(Vec::len), Some(2));
        assert_eq!(records[1]["body"]["stringValue"], r#"{"id":"2"}"#);
    }

    #[test]
    fn a_busy_collector_is_retried_and_a_refusing_one_is_not() {
        let url = "http://collector.test:4318/v1/logs";
        let secret = ("otlp-token", "Bearer abc");
        FakeHost::new()
            .secret(secret.0, secret.1)
            .http_response("POST", url, 503, b"")
            .install();
        let busy = export(&settings(), &[event("1")]);
        assert!(matches!(busy, Err(SinkError::Retryable(_))), "{busy:?}");
        FakeHost::new()
            .secret(secret.0, secret.1)
            .http_response("POST", url, 400, b"")
            .install();
        let refused = export(&settings(), &[event("1")]);
        assert!(
            matches!(refused, Err(SinkError::Permanent(_))),
            "{refused:?}"
        );
        FakeHost::new()
            .http_response("POST", url, 200, b"")
            .install();
        let no_secret = export(&settings(), &[event("1")]);
        assert!(
            matches!(no_secret, Err(SinkError::Permanent(_))),
            "{no_secret:?}"
        );
    }
}
