//! TLS for k2i's HTTP clients. reqwest is built with rustls and no crypto provider of its own
//! (`rustls-no-provider`: aws-lc's C build is slow and `ring` is already in the tree for parquet), so ring is
//! installed as rustls' process-wide default before any client is built: [`install_crypto_provider`].
//! Server certificates are checked by rustls-platform-verifier (on Linux the system trust store, as
//! rustls-native-certs finds it, `SSL_CERT_FILE` / `SSL_CERT_DIR` included), plus any CA a configuration adds.

use std::path::Path;
use std::sync::Once;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// Installs ring as rustls' process-wide default crypto provider; the first call does, later ones do nothing.
/// Call it before building any reqwest client (reqwest panics without a provider), from any thread.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only when the embedding program installed a provider first: that one is used, which is right.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The certificates of the PEM file `path` that config key `key` names (a CA bundle, a client certificate
/// chain), each checked to be a parsable X.509 certificate. A missing, empty or malformed file is a
/// [`ErrorKind::Config`] error naming the key and the file.
pub(crate) fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(key, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| file_error(key, path, &format!("is not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"));
    }
    for (i, cert) in certs.iter().enumerate() {
        // A trust anchor is the subject and public key of a parsable X.509 certificate.
        if let Err(e) = rustls::RootCertStore::empty().add(cert.clone()) {
            return Err(file_error(
                key,
                path,
                &format!("its certificate {} is not a valid X.509 certificate: {e}", i + 1),
            ));
        }
    }
    Ok(certs)
}

/// The private key of the PEM file `path` that config key `key` names (PKCS#8, RSA or EC; not encrypted).
pub(crate) fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let message = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, or an RSA or EC one; not encrypted)"
                    .to_owned()
            }
            e => format!("is not a valid PEM file: {e}"),
        };
        file_error(key, path, &message)
    })
}

/// The rustls error somewhere in an error's chain (io errors wrap it; their `source` skips what they wrap).
pub(crate) fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = rustls_error(inner)
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

fn file_error(key: &str, path: &Path, message: &str) -> Error {
    Error::new(ErrorKind::Config, message).with("key", key).with("file", path.display())
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| file_error(key, path, &format!("cannot read the file: {e}")))
}

/// How a TLS handshake was lost to the configuration rather than to the network.
pub(crate) enum Refusal {
    /// The server's certificate is not trusted; why (worded after "the certificate is not trusted: "), with
    /// `ca_key` (the config key of the extra CA) named where a CA is missing.
    Untrusted(String),
    /// The server refused the client's certificate, or its lack of one (the TLS alert it sent).
    ClientCertificate(rustls::AlertDescription),
}

/// The configuration refusal behind a failed request, if its error chain holds one. `ca_key` names the config
/// key of the extra CA in the message.
pub(crate) fn refusal(e: &(dyn std::error::Error + 'static), ca_key: &str) -> Option<Refusal> {
    use rustls::{AlertDescription as A, CertificateError as C};
    let reason = match rustls_error(e)? {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            format!("it is not signed by a CA of the system trust store or of {ca_key}")
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "it is not valid for the URL's host".to_owned()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "it has expired".to_owned(),
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "it is not valid yet".to_owned()
        }
        rustls::Error::InvalidCertificate(other) => format!("{other:?}"),
        rustls::Error::AlertReceived(
            alert @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied),
        ) => return Some(Refusal::ClientCertificate(*alert)),
        _ => return None,
    };
    Some(Refusal::Untrusted(reason))
}
