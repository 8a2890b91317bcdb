//! The Iceberg REST catalog: iceberg-catalog-rest's client behind k2i's own HTTP client, its own OAuth2
//! token handling and its own reading of failures.
//!
//! # What iceberg-catalog-rest 0.10 does, and what k2i adds
//! The library sends `token` as `Authorization: Bearer …` and every `header.<name>` property as a header. It
//! exchanges `credential` for a token once (the `client_credentials` grant) and keeps that token for ever:
//! `expires_in` is parsed and ignored, nothing refreshes it, and a 401 is an "unexpected status" like any
//! other. It builds its HTTP client (reqwest 0.12, whose TLS features it leaves off) without TLS and without
//! a timeout, and its `Debug` prints its properties, tokens and credentials included. So k2i:
//!
//! - builds the HTTP client itself and hands it over (`with_client`): rustls with the system trust store
//!   plus `iceberg.rest.ca_cert`, `client_cert`/`client_key` for mTLS, and `request_timeout` on every
//!   request (connecting included). The OAuth2 token endpoint is reached through the same client.
//! - runs the OAuth2 client-credentials grant itself ([`OAuth`], RFC 6749 §4.4 as the Iceberg REST spec uses
//!   it: a form POST of `grant_type`, `client_id`, `client_secret` and `scope`) and gives the library only
//!   the token it got. A token is renewed once four fifths of its `expires_in` have passed, and at once when
//!   the catalog answers 401; a call refused with 401 is then sent once more with the new token (a table
//!   creation or a commit, which cannot be re-sent from here, fails retryable instead and the caller's
//!   retry sends it). Renewing opens a new library catalog with the new token — an open one cannot take a
//!   token from outside, and its `regenerate_token` does not tell when the new token expires — which costs
//!   one `GET /v1/config`.
//! - reads failures the library reports as "unexpected": a certificate the configuration does not trust, a
//!   client certificate the catalog refuses, a refused token or credential, and a 403 are configuration
//!   errors, not retried (only the operator can fix them), naming the catalog URL; the network failing or
//!   a request timing out stays transient.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};
use iceberg_catalog_rest::RestCatalogBuilder;
use reqwest_rest as http;
use serde::Deserialize;

use crate::config::{IcebergConfig, RestCatalogConfig};
use crate::error::{Error, ErrorKind, Result};

/// The scope asked for when `iceberg.rest.scope` is not set (what Iceberg's Java and Rust clients ask for).
const DEFAULT_SCOPE: &str = "catalog";

/// Opens the REST catalog of `[iceberg]` / `[iceberg.rest]`; `props` are the storage properties. Nothing is
/// sent yet: the first catalog call fetches the configuration (and, with `credential`, a token).
pub(super) async fn open(
    ice: &IcebergConfig,
    mut props: HashMap<String, String>,
) -> Result<(Arc<dyn Catalog>, String)> {
    let uri = ice.rest_uri.clone().ok_or_else(|| {
        Error::new(ErrorKind::Config, "iceberg.rest_uri is required for the REST catalog")
            .with("key", "iceberg.rest_uri")
    })?;
    let uri = uri.trim_end_matches('/').to_owned();
    let rest = &ice.rest;
    let client = http_client(rest)?;
    props.insert("uri".to_owned(), uri.clone());
    if let Some(w) = &rest.warehouse {
        props.insert("warehouse".to_owned(), w.clone());
    }
    for (name, value) in &rest.headers {
        let key = format!("iceberg.rest.headers.{name}");
        // Checked here: the library's own message for a bad value quotes the value, which may be a secret.
        http::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::new(ErrorKind::Config, "is not a valid HTTP header name").with("key", &key))?;
        let value = value.expose()?;
        http::header::HeaderValue::from_str(value).map_err(|_| {
            Error::new(ErrorKind::Config, "is not a valid HTTP header value (visible ASCII only)").with("key", &key)
        })?;
        props.insert(format!("header.{name}"), value.to_owned());
    }
    let auth = match (&rest.token, &rest.credential) {
        (Some(token), _) => {
            props.insert("token".to_owned(), token.expose()?.to_owned());
            Auth::Token
        }
        (None, Some(credential)) => {
            let (client_id, client_secret) = match credential.expose()?.split_once(':') {
                Some((id, secret)) => (Some(id.to_owned()), secret.to_owned()),
                None => (None, credential.expose()?.to_owned()),
            };
            Auth::OAuth(OAuth {
                endpoint: rest.oauth2_server_uri.clone().unwrap_or_else(|| format!("{uri}/v1/oauth/tokens")),
                client_id,
                client_secret,
                scope: rest.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_owned()),
                client: client.clone(),
            })
        }
        (None, None) => Auth::None,
    };
    let catalog = RestCatalog { uri: uri.clone(), props, client, auth, session: tokio::sync::Mutex::new(None) };
    Ok((Arc::new(catalog), uri))
}

/// The HTTP client of the catalog and its token endpoint: TLS, client certificate, request timeout.
fn http_client(rest: &RestCatalogConfig) -> Result<http::Client> {
    crate::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match &rest.ca_cert {
        Some(path) => crate::tls::certificates("iceberg.rest.ca_cert", path)?,
        None => Vec::new(),
    };
    let tls_error =
        |e: rustls::Error| Error::new(ErrorKind::Config, "cannot set up TLS for the REST catalog").source(e);
    // The system trust store and the configured CAs, checked as the registry's client does.
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone()).map_err(tls_error)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let tls = match (&rest.client_cert, &rest.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::certificates("iceberg.rest.client_cert", cert)?;
            let private = crate::tls::private_key("iceberg.rest.client_key", key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                let message = match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "is not the private key of the certificate in iceberg.rest.client_cert".to_owned()
                    }
                    e => format!("holds a private key k2i cannot use: {e}"),
                };
                Error::new(ErrorKind::Config, message)
                    .with("key", "iceberg.rest.client_key")
                    .with("file", key.display())
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::new(ErrorKind::Config, "`client_cert` and `client_key` go together (mTLS)")
                .with("key", "iceberg.rest"));
        }
    };
    let timeout = rest.request_timeout.get();
    http::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| Error::new(ErrorKind::Config, "cannot build the REST catalog's HTTP client").source(e))
}

/// How k2i authenticates to the catalog.
enum Auth {
    None,
    /// `iceberg.rest.token`, handed to the library as its `token` property.
    Token,
    /// `iceberg.rest.credential`: tokens fetched and renewed by k2i.
    OAuth(OAuth),
}

/// The OAuth2 client-credentials grant against the token endpoint.
struct OAuth {
    endpoint: String,
    client_id: Option<String>,
    client_secret: String,
    scope: String,
    client: http::Client,
}

/// A token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

/// A token endpoint's refusal (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenRefusal {
    error: String,
    error_description: Option<String>,
}

/// A token and when to ask for the next one.
struct Issued {
    token: String,
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl OAuth {
    async fn fetch(&self) -> iceberg::Result<Issued> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(id) = &self.client_id {
            form.push(("client_id", id));
        }
        form.push(("client_secret", &self.client_secret));
        form.push(("scope", &self.scope));
        let asked = Instant::now();
        let response = self
            .client
            .post(&self.endpoint)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error("cannot reach the OAuth2 token endpoint", &self.endpoint, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error("cannot read the OAuth2 token endpoint's answer", &self.endpoint, e))?;
        if status.is_success() {
            let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
                refused(format!("the OAuth2 token endpoint answered {status} without a token: {e}"), &self.endpoint)
            })?;
            if let Some(kind) = reply.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
                return Err(refused(
                    format!("the OAuth2 token endpoint issued a `{kind}` token, not a bearer token"),
                    &self.endpoint,
                ));
            }
            let renew_at = reply.expires_in.map(|s| asked + Duration::from_secs(s).mul_f64(0.8));
            let expires_at = reply.expires_in.map(|s| asked + Duration::from_secs(s));
            tracing::info!(endpoint = %self.endpoint, expires_in_s = ?reply.expires_in, "fetched an OAuth2 token for the REST catalog");
            return Ok(Issued { token: reply.access_token, renew_at, expires_at });
        }
        let reason = match serde_json::from_slice::<TokenRefusal>(&body) {
            Ok(r) => format!("{}{}", r.error, r.error_description.map(|d| format!(": {d}")).unwrap_or_default()),
            Err(_) => "no RFC 6749 error in the answer".to_owned(),
        };
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("the OAuth2 token endpoint answered {status} ({reason})"),
            )
            .with_context("url", &self.endpoint)
            .with_retryable(true));
        }
        Err(refused(
            format!("the OAuth2 token endpoint refused iceberg.rest.credential: {status} ({reason})"),
            &self.endpoint,
        ))
    }
}

/// An error only the operator can fix: k2i's error conversion makes it [`ErrorKind::Config`], not retried.
fn refused(message: String, url: &str) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::PreconditionFailed, message).with_context("url", url).with_retryable(false)
}

/// A request that did not get an answer: a TLS handshake the configuration loses is refused, anything
/// else (the network, a timeout) is retryable.
fn transport_error(message: &str, url: &str, e: http::Error) -> iceberg::Error {
    match tls_refusal(&e) {
        Some(reason) => refused(reason, url).with_source(e),
        None => iceberg::Error::new(iceberg::ErrorKind::Unexpected, message)
            .with_context("url", url)
            .with_retryable(true)
            .with_source(e),
    }
}

/// Why a request failed, when the TLS handshake was lost to the configuration rather than to the network.
fn tls_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    Some(match crate::tls::refusal(e, "iceberg.rest.ca_cert")? {
        crate::tls::Refusal::Untrusted(reason) => {
            format!("the REST catalog's TLS certificate is not trusted: {reason}")
        }
        crate::tls::Refusal::ClientCertificate(alert) => format!(
            "the REST catalog refused the TLS handshake ({alert:?}): it requires a client certificate it trusts \
             (iceberg.rest.client_cert and client_key)"
        ),
    })
}

/// The HTTP status of a library error made from an unexpected answer. The library keeps it only in the
/// error's context, which it does not expose but prints (`…, context: { status: 401 Unauthorized, … }`).
fn status_of(e: &iceberg::Error) -> Option<u16> {
    let text = e.to_string();
    let at = text.find("status: ")? + "status: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The library's catalog with the token it was opened with.
struct Session {
    catalog: Arc<iceberg_catalog_rest::RestCatalog>,
    /// When to ask for a new token (`None`: never, unless the catalog refuses this one).
    renew_at: Option<Instant>,
    /// When its token expires (`None`: not known to); until then a failed renewal keeps the session.
    expires_at: Option<Instant>,
    /// The catalog refused its token (a 401): it is not kept when a renewal fails.
    refused: bool,
    /// Counts sessions, so that a 401 renews the token it was refused with, not a newer one.
    generation: u64,
}

/// The REST catalog as k2i uses it (see the module documentation).
pub struct RestCatalog {
    uri: String,
    /// The library's properties, without an OAuth2 token (each session adds its own).
    props: HashMap<String, String>,
    client: http::Client,
    auth: Auth,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl fmt::Debug for RestCatalog {
    // Not derived: the properties hold the token and header values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::Token => "token",
            Auth::OAuth(_) => "oauth2",
        };
        f.debug_struct("RestCatalog").field("uri", &self.uri).field("auth", &auth).finish_non_exhaustive()
    }
}

impl RestCatalog {
    /// The current session, opened (with a new token, for OAuth2) when there is none or its token is due.
    async fn session(&self) -> iceberg::Result<(Arc<iceberg_catalog_rest::RestCatalog>, u64)> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref()
            && s.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok((s.catalog.clone(), s.generation));
        }
        let mut props = self.props.clone();
        let (renew_at, expires_at) = match &self.auth {
            Auth::OAuth(oauth) => {
                let issued = match oauth.fetch().await {
                    Ok(issued) => issued,
                    // The token endpoint failed at renewal time: the current token still serves until it expires
                    // (the next call asks again).
                    Err(e) => match current.as_ref() {
                        Some(s) if !s.refused && s.expires_at.is_none_or(|at| Instant::now() < at) => {
                            tracing::warn!(error = %e, "cannot renew the OAuth2 token yet; the current one is still valid");
                            return Ok((s.catalog.clone(), s.generation));
                        }
                        _ => return Err(e),
                    },
                };
                props.insert("token".to_owned(), issued.token);
                (issued.renew_at, issued.expires_at)
            }
            Auth::None | Auth::Token => (None, None),
        };
        let catalog = RestCatalogBuilder::default()
            .with_client(self.client.clone())
            .with_storage_factory(crate::storage::factory())
            .load("rest", props)
            .await?;
        let generation = current.as_ref().map_or(1, |s| s.generation + 1);
        let catalog = Arc::new(catalog);
        *current = Some(Session { catalog: catalog.clone(), renew_at, expires_at, refused: false, generation });
        Ok((catalog, generation))
    }

    /// Makes the next call fetch a new token, if the session refused is still the current one.
    async fn renew(&self, generation: u64) {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_mut().filter(|s| s.generation == generation) {
            s.renew_at = Some(Instant::now());
            s.refused = true;
        }
    }

    /// Runs `op` on the current session; a 401 with OAuth2 renews the token and runs it once more.
    async fn call<T, F, Fut>(&self, op: F) -> iceberg::Result<T>
    where
        F: Fn(Arc<iceberg_catalog_rest::RestCatalog>) -> Fut,
        Fut: Future<Output = iceberg::Result<T>>,
    {
        let (catalog, generation) = self.session().await?;
        match op(catalog).await {
            Err(e) if status_of(&e) == Some(401) && matches!(self.auth, Auth::OAuth(_)) => {
                tracing::warn!(catalog = %self.uri, "the REST catalog refused the OAuth2 token; fetching a new one");
                self.renew(generation).await;
                let (catalog, _) = self.session().await?;
                op(catalog).await.map_err(|e| self.classify(e, true))
            }
            outcome => outcome.map_err(|e| self.classify(e, false)),
        }
    }

    /// Runs `op`, whose argument cannot be sent twice, on the current session: a 401 with OAuth2 renews the
    /// token and fails retryable (the request was refused, so not applied; the caller's retry sends it anew).
    async fn call_once<T>(
        &self,
        op: impl AsyncFnOnce(Arc<iceberg_catalog_rest::RestCatalog>) -> iceberg::Result<T>,
    ) -> iceberg::Result<T> {
        let (catalog, generation) = self.session().await?;
        match op(catalog).await {
            Err(e) if status_of(&e) == Some(401) && matches!(self.auth, Auth::OAuth(_)) => {
                tracing::warn!(catalog = %self.uri, "the REST catalog refused the OAuth2 token; fetching a new one");
                self.renew(generation).await;
                Err(iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    "the REST catalog refused the OAuth2 token (401); a new one is fetched for the next attempt",
                )
                .with_context("url", &self.uri)
                .with_retryable(true)
                .with_source(e))
            }
            outcome => outcome.map_err(|e| self.classify(e, false)),
        }
    }

    /// Turns the library's "unexpected" failures that only the operator can fix into refusals.
    fn classify(&self, e: iceberg::Error, renewed: bool) -> iceberg::Error {
        if let Some(reason) = tls_refusal(&e) {
            return refused(reason, &self.uri).with_source(e);
        }
        let message = match (status_of(&e), &self.auth) {
            (Some(401), Auth::None) => {
                "the REST catalog requires authentication (401): set iceberg.rest.token or iceberg.rest.credential"
            }
            (Some(401), Auth::Token) => "the REST catalog refused iceberg.rest.token (401)",
            (Some(401), Auth::OAuth(_)) if renewed => {
                "the REST catalog refused a newly issued OAuth2 token (401): check iceberg.rest.scope and the \
                 client's grants"
            }
            (Some(403), _) => "the REST catalog denied the request (403): the principal lacks a privilege",
            _ => return e,
        };
        refused(message.to_owned(), &self.uri).with_source(e)
    }
}

#[async_trait]
impl Catalog for RestCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.call(|c| async move { c.list_namespaces(parent).await }).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.call(|c| {
            let properties = properties.clone();
            async move { c.create_namespace(namespace, properties).await }
        })
        .await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.call(|c| async move { c.get_namespace(namespace).await }).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.call(|c| async move { c.namespace_exists(namespace).await }).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.call(|c| {
            let properties = properties.clone();
            async move { c.update_namespace(namespace, properties).await }
        })
        .await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.call(|c| async move { c.drop_namespace(namespace).await }).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.call(|c| async move { c.list_tables(namespace).await }).await
    }

    async fn create_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> iceberg::Result<Table> {
        self.call_once(async move |c| c.create_table(namespace, creation).await).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.call(|c| async move { c.load_table(table).await }).await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.call(|c| async move { c.drop_table(table).await }).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.call(|c| async move { c.purge_table(table).await }).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.call(|c| async move { c.table_exists(table).await }).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.call(|c| async move { c.rename_table(src, dest).await }).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> iceberg::Result<Table> {
        self.call(|c| {
            let location = metadata_location.clone();
            async move { c.register_table(table, location).await }
        })
        .await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.call_once(async move |c| c.update_table(commit).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_an_unexpected_answer_is_read_from_the_library_error() {
        let e = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "Received response with unexpected status code")
            .with_context("status", "401 Unauthorized")
            .with_context("headers", "{}");
        assert_eq!(status_of(&e), Some(401));
        assert_eq!(status_of(&iceberg::Error::new(iceberg::ErrorKind::Unexpected, "connection reset")), None);
    }

    #[test]
    fn refusals_are_config_errors_and_not_retried() {
        let e = Error::iceberg(
            "cannot load table",
            refused("the REST catalog refused iceberg.rest.token (401)".into(), "http://c"),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.is_retryable());
    }
}
