//! `POST /api/v1/namespaces/{ns}/reconcile-plan`: what the grant reconciler would run to
//! make the namespace's managed roles match their Intents (a dry run: it reads the
//! targets' catalogs and changes nothing). An empty plan means actual equals desired.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use postern_reconciler::{reconcile, Options};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::{ignore_body, params, Params};
use crate::{blocking, Api};

pub async fn reconcile_plan(
    State(api): State<Arc<Api>>,
    path: Params<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let namespace = params(path)?;
    ignore_body(&api, &headers, body).await?;
    let (check_api, check_headers, check_namespace) =
        (api.clone(), headers.clone(), namespace.clone());
    blocking(move || {
        let caller = check_api.caller(&check_headers)?;
        caller.check_read(&check_namespace, &format!("namespace {check_namespace}"))
    })
    .await?;
    // The reconciler plans for every target at once; the caller sees its namespace's part
    // (places are `namespace/target/database`, problems name their resource).
    let report = reconcile(&api.store, Options { dry_run: true })
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "upstream",
                e.to_string(),
            )
        })?;
    let prefix = format!("{namespace}/");
    let named = format!(" {namespace}/");
    let statements: Vec<Value> = report
        .statements
        .iter()
        .filter(|s| s.place.starts_with(&prefix))
        .map(|s| json!({"place": s.place, "sql": s.sql}))
        .collect();
    let problems: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| p.contains(&named))
        .collect();
    Ok(Json(
        json!({"statements": statements, "problems": problems}),
    ))
}
