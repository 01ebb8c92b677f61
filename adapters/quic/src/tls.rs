//! TLS for `tern/1`: always on, TLS 1.3 only (QUIC requires it), ALPN `tern/1`, rustls with the
//! ring provider.
//!
//! The broker uses either a certificate and key the operator provides (PEM files) or a
//! self-signed certificate it generates on first start with rcgen and keeps in
//! `<data>/quic/cert.pem` and `<data>/quic/key.pem` (the key file is created mode 0600). Clients
//! trust the broker by the certificate file (a PEM with one or more certificates).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::limits::{ALPN, DEFAULT_SERVER_NAME};

/// A TLS setup failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a certificate or key file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    Pem { path: PathBuf, reason: String },
    /// Generating the self-signed certificate failed.
    Generate(String),
    /// rustls or quinn refused the configuration.
    Config(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TlsError::Pem { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Generate(e) => write!(f, "generating a self-signed certificate: {e}"),
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Read every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Read the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Where the broker's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Generate (first start) or reuse a self-signed certificate in this directory
    /// (`cert.pem`, `key.pem`), valid for `localhost`, `127.0.0.1`, `::1` and `extra_names`.
    SelfSigned {
        dir: PathBuf,
        extra_names: Vec<String>,
    },
    /// Operator-provided PEM files.
    Files { cert: PathBuf, key: PathBuf },
}

/// The broker's certificate chain and key, and the file clients should trust.
#[derive(Debug)]
pub struct ServerIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The certificate file (what clients pass as their trust anchor).
    pub cert_path: PathBuf,
    /// True when this start generated the certificate.
    pub generated: bool,
}

/// Load or create the broker's identity.
pub fn server_identity(source: &CertSource) -> Result<ServerIdentity, TlsError> {
    match source {
        CertSource::Files { cert, key } => Ok(ServerIdentity {
            certs: load_certs(cert)?,
            key: load_key(key)?,
            cert_path: cert.clone(),
            generated: false,
        }),
        CertSource::SelfSigned { dir, extra_names } => {
            let cert_path = dir.join("cert.pem");
            let key_path = dir.join("key.pem");
            let mut generated = false;
            if !cert_path.exists() || !key_path.exists() {
                generate_self_signed(dir, &cert_path, &key_path, extra_names)?;
                generated = true;
            }
            Ok(ServerIdentity {
                certs: load_certs(&cert_path)?,
                key: load_key(&key_path)?,
                cert_path,
                generated,
            })
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn generate_self_signed(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    extra_names: &[String],
) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut names = vec![
        DEFAULT_SERVER_NAME.to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_file(key_path, ck.signing_key.serialize_pem().as_bytes(), true)?;
    write_file(cert_path, ck.cert.pem().as_bytes(), false)?;
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration (TLS 1.3, ALPN `tern/1`).
pub fn server_crypto(identity: ServerIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.certs, identity.key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The rustls client configuration trusting exactly `roots` (TLS 1.3, ALPN `tern/1`).
pub fn client_crypto(roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store
            .add(c.clone())
            .map_err(|e| TlsError::Config(format!("trust anchor: {e}")))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
