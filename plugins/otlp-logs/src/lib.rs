//! A log sink: each batch of access-log events becomes one OTLP/HTTP JSON request
//! (`POST {endpoint}/v1/logs`), one log record per event with the event's JSON line as
//! its body and its routing fields as attributes. 2xx: written. 408, 429, 5xx or no
//! answer: the gateway keeps the batch and retries it. Any other status: refused for
//! good. With `authorization_secret`, that Secret's value is sent as `Authorization`.

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

use postern_plugin_sdk::log_sink::exports::postern::plugin::sink::{Event, Guest, SinkError};
use postern_plugin_sdk::log_sink::postern::plugin::http_client::{send, HttpError, Request};
use postern_plugin_sdk::log_sink::postern::plugin::log::{write, Level};
use postern_plugin_sdk::log_sink::postern::plugin::secrets;

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
        write(
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
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(name) = &settings.authorization_secret {
            let value = secrets::get(name)
                .map_err(|e| SinkError::Permanent(format!("secret {name}: {e:?}")))?;
            headers.push(("authorization".into(), value));
        }
        let request = Request {
            method: "POST".into(),
            url: format!("{}/v1/logs", settings.endpoint.trim_end_matches('/')),
            headers,
            body: body(settings, &events),
            timeout_ms: 0,
        };
        match send(&request) {
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
}

postern_plugin_sdk::log_sink::export_log_sink!(OtlpLogs);
