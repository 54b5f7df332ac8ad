//! TLS: the rustls server configuration (ring provider, so no C toolchain beyond
//! the one SQLite needs) from PEM files, optionally requiring client certificates.
//! The sessions themselves live in the connections (`conn.rs`), driven by the same
//! poll loop as plain sockets.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::{Error, Result};

/// Builds the server configuration: certificate chain and key from PEM files, and,
/// with `ca`, a requirement that clients present a certificate signed by it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read --tls-cert", cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("cannot parse --tls-cert", cert, &e))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "--tls-cert {} holds no certificate",
            cert.display()
        )));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read --tls-key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| bad("cannot read --tls-ca", ca, &e))?
            {
                let c = c.map_err(|e| bad("cannot parse --tls-ca", ca, &e))?;
                roots
                    .add(c)
                    .map_err(|e| bad("bad certificate in --tls-ca", ca, &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad("cannot use --tls-ca", ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("TLS certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(config))
}
