//! The server certificate: a self-signed certificate generated on first
//! start and kept, with its private key, in one PEM file
//! (`/etc/xensource/xapi-ssl.pem`, as in the reference).

use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {path}: {msg}")]
    Cert { path: String, msg: String },
}

fn err(path: &Path, msg: impl ToString) -> TlsError {
    TlsError::Cert {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Load the PEM (key + certificate), generating it first if missing.
/// Returns the rustls configuration and the certificate PEM.
pub fn load_or_generate(
    path: &Path,
    hostname: &str,
    address: &str,
) -> Result<(Arc<rustls::ServerConfig>, String), TlsError> {
    if !path.exists() {
        let mut names = vec![hostname.to_string(), "localhost".to_string()];
        if !address.is_empty() {
            names.push(address.to_string());
        }
        names.dedup();
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| err(path, e))?;
        let pem = format!("{}{}", ck.key_pair.serialize_pem(), ck.cert.pem());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let tmp = path.with_extension("tmp");
        write_private(&tmp, pem.as_bytes()).map_err(|e| err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
        tracing::info!("generated self-signed certificate in {}", path.display());
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, e))?;
    if certs.is_empty() {
        return Err(err(path, "no certificate in file"));
    }
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| err(path, e))?
        .ok_or_else(|| err(path, "no private key in file"))?;
    let cert_pem: String = {
        let text = String::from_utf8_lossy(&bytes);
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        text[start..].to_string()
    };
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(path, e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| err(path, e))?;
    Ok((Arc::new(cfg), cert_pem))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
