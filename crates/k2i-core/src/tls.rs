//! TLS for k2i's HTTP clients. reqwest is built with rustls and no crypto provider of its own
//! (`rustls-no-provider`: aws-lc's C build is slow and `ring` is already in the tree for parquet), so ring is
//! installed as rustls' process-wide default before any client is built: [`install_crypto_provider`].
//! Server certificates are checked by rustls-platform-verifier (on Linux the system trust store, as
//! rustls-native-certs finds it, `SSL_CERT_FILE` / `SSL_CERT_DIR` included), plus any CA a configuration adds.

use std::sync::Once;

/// Installs ring as rustls' process-wide default crypto provider; the first call does, later ones do nothing.
/// Call it before building any reqwest client (reqwest panics without a provider), from any thread.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only when the embedding program installed a provider first: that one is used, which is right.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
