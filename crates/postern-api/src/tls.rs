//! TLS for the admin API: the gateway's certificate with HTTP/1.1 as the application
//! protocol (re-read on SIGHUP, as the proxy's), and the accept loop that hands each TLS
//! stream to hyper (axum's own `serve` speaks plain TCP only).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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

/// The API's TLS configuration, from PEM files that [`ApiTls::reload`] reads again.
pub struct ApiTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl ApiTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ApiTls>, ApiTlsError> {
        Ok(Arc::new(ApiTls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(server_config(cert_file, key_file)?),
        }))
    }

    /// Re-reads the files; on failure the certificate in use stays. Connections already
    /// open keep the certificate they were accepted with.
    pub fn reload(&self) -> Result<(), ApiTlsError> {
        let fresh = server_config(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A server configuration for the API from PEM certificate chain and key files.
fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, ApiTlsError> {
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
    tls: Arc<ApiTls>,
    shutdown: impl Future<Output = ()>,
) {
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
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
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
