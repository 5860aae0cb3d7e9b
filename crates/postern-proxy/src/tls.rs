//! TLS on the client leg (rustls): the server certificate and key from files, reloadable
//! without a restart (SIGHUP), the `tls-server-end-point` channel-binding data of the
//! certificate in use for SCRAM-SHA-256-PLUS, and optional client certificates verified
//! against a client CA (a client without one still logs in with a key).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use postern_wire::certificate::tls_server_end_point;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be loaded. Names files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read a PEM certificate chain: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: cannot read a PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: cannot use as client CA: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not form a usable TLS configuration: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// One loaded certificate: the acceptor and the channel-binding data it implies.
pub(crate) struct ServerTls {
    pub acceptor: TlsAcceptor,
    /// `None` when the certificate's signature algorithm defines no end-point hash; then
    /// only plain SCRAM-SHA-256 is offered.
    pub end_point: Option<Vec<u8>>,
}

/// The client-leg TLS configuration, swapped whole on reload.
pub struct TlsConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    current: RwLock<Arc<ServerTls>>,
}

/// A verifier that asks for client certificates and checks any that come against the CA
/// in `path`, but lets clients without one proceed.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?
    {
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| fail(e.to_string()))
}

fn load(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<ServerTls, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert_file.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Certificate {
            path: cert_file.to_owned(),
            reason: "no certificate in the file".into(),
        });
    };
    let end_point = tls_server_end_point(leaf);
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    let config_error = |reason: String| TlsError::Config {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match client_ca_file {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    // What PostgreSQL 17+ clients ask for; clients that send no ALPN are served too.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

impl TlsConfig {
    /// Loads the server certificate and key, and the client CA when client certificates
    /// are to be accepted.
    pub fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        client_ca_file: Option<PathBuf>,
    ) -> Result<TlsConfig, TlsError> {
        let current = load(&cert_file, &key_file, client_ca_file.as_deref())?;
        Ok(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Re-reads the files; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
        )?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<ServerTls> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
