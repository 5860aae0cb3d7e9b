//! TLS for the admin API: the gateway's certificate with HTTP/1.1 as the application
//! protocol, and the accept loop that hands each TLS stream to hyper (axum's own
//! `serve` speaks plain TCP only).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("admin API TLS: {0}")]
    Config(String),
}

/// A server configuration for the API from PEM certificate chain and key files.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, ApiTlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ApiTlsError::File {
            path: cert_file.to_owned(),
            reason: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| ApiTlsError::File {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ApiTlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ApiTlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS until `shutdown` completes; connections in flight finish on
/// their own tasks.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    app: Router,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    warn!(error = %e, "admin API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(client = %peer, error = %e, "admin API TLS handshake failed");
                    return;
                }
            };
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(client = %peer, error = %e, "admin API connection ended with an error");
            }
        });
    }
}
