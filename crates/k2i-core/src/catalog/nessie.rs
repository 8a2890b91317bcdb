//! Project Nessie (`catalog_type = "nessie"`), through the Iceberg REST API Nessie serves itself at
//! `<server>/iceberg/<ref>`: the REST catalog code with a URI that names the branch. Nessie answers the REST
//! config request for that URI with the branch as the catalog's path prefix (`/iceberg/v1/<branch>/…`), so
//! every load and every commit is on that branch; a commit's compare-and-swap is Nessie's, on the branch's
//! head, and k2i's fencing (the commit's base snapshot) works as with any REST catalog.
//!
//! K2I configured Nessie with `rest_uri` pointing at Nessie's own API (`http://nessie:19120/api/v1`, or
//! `/api/v2`) and the branch in `[iceberg.nessie] default_branch`; [`iceberg_uri`] maps that form, the
//! server's root and `…/iceberg` onto the Iceberg REST URI, so those files keep working unchanged.
//!
//! Nessie places tables in its own warehouse (`nessie.catalog.warehouses.*` on the server) and tells clients
//! the object store's endpoint, path style and region; it also advertises request signing, which
//! iceberg-rust's FileIO does not implement: k2i reads and writes the files with the credentials of
//! `[iceberg.storage]`, so those must be able to reach the warehouse.
//!
//! # Commits
//! Nessie 0.99 (the newest whose server jar the Maven registry serves) refuses an `add-schema` update without
//! `last-column-id` (HTTP 500, "Cannot build AddSchema, some of required attributes are not set"), and
//! iceberg-rust 0.10's `TableUpdate::AddSchema` has no such field. A commit's updates cannot be looked at
//! without taking them out of the `TableCommit` (whose builder is crate-private), so [`NessieCatalog`] sends
//! every commit itself: the REST spec's `POST …/v1/<branch>/namespaces/<ns>/tables/<table>` with the library's
//! own request type, each `add-schema` given the new schema's highest field id as `last-column-id`, and the
//! answer read as the library reads it (409 a retryable conflict, 5xx an unknown outcome). Everything else
//! goes through the REST catalog. That request carries `iceberg.rest.token` and `headers` and trusts
//! `ca_cert`; OAuth2 `credential` and a client certificate are not built for Nessie ([`Config::unbuilt`]).
//!
//! [`Config::unbuilt`]: crate::config::Config::unbuilt

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent, TableUpdate};
use iceberg_catalog_rest::{CommitTableRequest, CommitTableResponse};

use crate::config::IcebergConfig;
use crate::error::{Error, ErrorKind, Result};

/// Why `rest_uri` and the branch name no Iceberg REST endpoint of Nessie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    /// The URI already names a ref (`…/iceberg/<ref>`), and not the configured branch.
    OtherRef {
        /// The ref the URI names.
        in_uri: String,
        /// `iceberg.nessie.default_branch`.
        branch: String,
    },
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtherRef { in_uri, branch } => write!(
                f,
                "names the Nessie ref `{in_uri}`, but iceberg.nessie.default_branch is `{branch}`; give the \
                 server (`…/api/v2` or `…/iceberg`) and the branch in iceberg.nessie.default_branch only"
            ),
        }
    }
}

/// What is wrong with `name` as a Nessie branch in the Iceberg REST path, if anything. Nessie's rule: a
/// letter first, then letters, digits and `_ - .` (no `..`), not ending in `.`. Nessie allows `/` too, but
/// in `…/iceberg/<branch>` it would end the path segment.
pub fn branch_problem(name: &str) -> Option<&'static str> {
    let first_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let legal = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if first_letter && legal && !name.contains("..") && !name.ends_with('.') {
        None
    } else {
        Some("a Nessie branch name (a letter, then letters, digits, `_`, `-`, `.`; no `..`, not ending in `.`)")
    }
}

/// The Iceberg REST URI of `branch` on the Nessie server `rest_uri` (trailing `/` ignored):
/// - `…/api/v1`, `…/api/v2` or `…/api` (Nessie's own API, K2I's form) → `…/iceberg/<branch>`;
/// - `…/iceberg` → `…/iceberg/<branch>`; `…/iceberg/<branch>` stays; `…/iceberg/<other ref>` is an error;
/// - anything else is the server's root (possibly behind a proxy path) → `…/iceberg/<branch>`.
pub fn iceberg_uri(rest_uri: &str, branch: &str) -> Result<String, UriError> {
    let uri = rest_uri.trim_end_matches('/');
    let server = ["/api/v1", "/api/v2", "/api", "/iceberg"].iter().find_map(|suffix| uri.strip_suffix(suffix));
    if let Some(server) = server {
        return Ok(format!("{server}/iceberg/{branch}"));
    }
    if let Some((server, reference)) = uri.rsplit_once('/')
        && server.ends_with("/iceberg")
    {
        return if reference == branch {
            Ok(uri.to_owned())
        } else {
            Err(UriError::OtherRef { in_uri: reference.to_owned(), branch: branch.to_owned() })
        };
    }
    Ok(format!("{uri}/iceberg/{branch}"))
}

/// Opens Nessie's Iceberg REST catalog on `iceberg.nessie.default_branch`, with every `[iceberg.rest]`
/// setting (auth, TLS, timeouts) as for a REST catalog; `props` are the FileIO properties of
/// `iceberg.storage`. Returns the catalog and its REST URI, which names the branch, for messages.
pub async fn open(ice: &IcebergConfig, props: HashMap<String, String>) -> Result<(Arc<dyn Catalog>, String)> {
    let rest_uri = ice.rest_uri.as_deref().ok_or_else(|| {
        Error::new(ErrorKind::Config, "iceberg.rest_uri (the Nessie server) is required for the Nessie catalog")
            .with("key", "iceberg.rest_uri")
    })?;
    let branch = &ice.nessie.default_branch;
    let uri = iceberg_uri(rest_uri, branch).map_err(|e| {
        Error::new(ErrorKind::Config, format!("cannot use iceberg.rest_uri for Nessie: {e}"))
            .with("key", "iceberg.rest_uri")
    })?;
    let commits = Commits::new(ice, &uri)?;
    commits.check_branch().await?;
    let mut rest = ice.clone();
    rest.rest_uri = Some(uri);
    let (catalog, location) = super::rest::open(&rest, props).await?;
    Ok((Arc::new(NessieCatalog { rest: catalog, commits }), location))
}

/// Nessie's Iceberg REST catalog: the REST catalog, with commits sent by [`Commits`] (see the module
/// documentation).
struct NessieCatalog {
    rest: Arc<dyn Catalog>,
    commits: Commits,
}

/// Sends table commits to Nessie's Iceberg REST endpoint. (Not `Debug`: its client's default headers hold
/// the bearer token.)
struct Commits {
    client: reqwest::Client,
    /// `<server>/iceberg/v1/<branch>`: the REST API's root with the branch as its prefix.
    prefixed: url::Url,
    /// `<server>/api/v2/trees/<branch>`: the branch in Nessie's own API.
    reference: url::Url,
    branch: String,
}

impl std::fmt::Debug for NessieCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NessieCatalog")
            .field("rest", &self.rest)
            .field("branch", &self.commits.branch)
            .finish_non_exhaustive()
    }
}

impl Commits {
    fn new(ice: &IcebergConfig, iceberg_uri: &str) -> Result<Self> {
        let rest = &ice.rest;
        let config = |message: &str| Error::new(ErrorKind::Config, message.to_owned()).with("catalog", iceberg_uri);
        let (server, branch) = iceberg_uri.rsplit_once('/').ok_or_else(|| config("is not a Nessie Iceberg URI"))?;
        let prefixed = url::Url::parse(&format!("{server}/v1/{branch}"))
            .map_err(|e| config("cannot use the Nessie Iceberg URI").source(e))?;
        let root = server.strip_suffix("/iceberg").unwrap_or(server);
        let reference = url::Url::parse(&format!("{root}/api/v2/trees/{branch}"))
            .map_err(|e| config("cannot use the Nessie Iceberg URI").source(e))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &rest.token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()?))
                .map_err(|_| config("iceberg.rest.token is not a valid HTTP header value"))?;
            let mut value = value;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in &rest.headers {
            // The REST catalog checks names and values (without quoting them) before this runs.
            let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value.expose()?),
            ) else {
                return Err(config("iceberg.rest.headers holds an invalid HTTP header"));
            };
            headers.insert(name, value);
        }
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder().default_headers(headers).timeout(rest.request_timeout.get());
        if let Some(path) = &rest.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::new(ErrorKind::Config, "cannot read the CA certificates")
                    .with("key", "iceberg.rest.ca_cert")
                    .with("file", path.display())
                    .source(e)
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::new(ErrorKind::Config, "holds no PEM certificates k2i can use")
                    .with("key", "iceberg.rest.ca_cert")
                    .with("file", path.display())
                    .source(e)
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| config("cannot build the HTTP client for Nessie").source(e))?;
        Ok(Self { client, prefixed, reference, branch: branch.to_owned() })
    }

    /// Refuses a branch Nessie does not have, or a tag: its Iceberg API answers either with a bare 400 on the
    /// first call, which would be retried as if the catalog were failing. Anything but a clear answer (Nessie
    /// down, no access to its own API) is left to the catalog calls, which report and retry it.
    async fn check_branch(&self) -> Result<()> {
        let Ok(response) = self.client.get(self.reference.clone()).send().await else { return Ok(()) };
        let refused = |message: String| {
            Err(Error::new(ErrorKind::Config, message)
                .with("key", "iceberg.nessie.default_branch")
                .with("url", self.reference.as_str()))
        };
        match response.status().as_u16() {
            404 => refused(format!(
                "the Nessie branch `{}` does not exist; create it (POST /api/v2/trees?name={}&type=BRANCH) or \
                 name another",
                self.branch, self.branch
            )),
            200 => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                match body["reference"]["type"].as_str() {
                    Some("BRANCH") | None => Ok(()),
                    Some(other) => refused(format!(
                        "`{}` is a Nessie {}, not a branch; k2i commits to branches only",
                        self.branch,
                        other.to_ascii_lowercase()
                    )),
                }
            }
            _ => Ok(()),
        }
    }

    /// `POST …/namespaces/<ns>/tables/<table>` with the commit; the metadata location and metadata Nessie
    /// answers with. `base` is the table as last loaded: an added schema gets an id it does not use yet.
    async fn send(&self, commit: &mut TableCommit, base: &Table) -> iceberg::Result<CommitTableResponse> {
        let ident = commit.identifier().clone();
        let request = CommitTableRequest {
            identifier: Some(ident.clone()),
            requirements: commit.take_requirements(),
            updates: commit.take_updates(),
        };
        let mut body = serde_json::to_value(&request).map_err(|e| unexpected("cannot encode the commit", e))?;
        // iceberg-rust sends an added schema under the id of the schema it was derived from; Nessie, unlike
        // Iceberg's own catalogs, does not assign a new one and refuses the duplicate ("A schema with ID 0
        // already exists"). So it gets the next free id, as Iceberg's Java client sends, and a
        // `set-current-schema` naming the old id follows it.
        let mut next_id = base.metadata().schemas_iter().map(|s| s.schema_id()).max().unwrap_or(-1) + 1;
        let mut renamed = HashMap::new();
        for (update, json) in request.updates.iter().zip(body["updates"].as_array_mut().into_iter().flatten()) {
            match update {
                TableUpdate::AddSchema { schema } => {
                    json["last-column-id"] = schema.highest_field_id().into();
                    json["schema"]["schema-id"] = next_id.into();
                    renamed.insert(schema.schema_id(), next_id);
                    next_id += 1;
                }
                TableUpdate::SetCurrentSchema { schema_id } => {
                    if let Some(id) = renamed.get(schema_id) {
                        json["schema-id"] = (*id).into();
                    }
                }
                _ => {}
            }
        }
        let mut url = self.prefixed.clone();
        url.path_segments_mut().map_err(|()| unexpected("cannot build the table's URL", "not a base URL"))?.extend([
            "namespaces",
            &ident.namespace().to_url_string(),
            "tables",
            ident.name(),
        ]);
        let response = self.client.post(url.clone()).json(&body).send().await.map_err(|e| {
            // Sent or not, its outcome is unknown: the next attempt's fencing check finds out.
            iceberg::Error::new(iceberg::ErrorKind::Unexpected, "the commit request to Nessie failed")
                .with_context("url", url.as_str())
                .with_retryable(true)
                .with_source(e)
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let failed = |kind, message: &str| {
            iceberg::Error::new(kind, message.to_owned())
                .with_context("url", url.as_str())
                .with_context("status", status.as_str())
                .with_context("response", text.chars().take(500).collect::<String>())
        };
        match status.as_u16() {
            200 => serde_json::from_str(&text)
                .map_err(|e| unexpected("cannot read Nessie's commit response", e).with_context("url", url.as_str())),
            404 => Err(failed(iceberg::ErrorKind::TableNotFound, "Tried to update a table that does not exist")),
            409 => Err(failed(
                iceberg::ErrorKind::CatalogCommitConflicts,
                "CatalogCommitConflicts, one or more requirements failed. The client may retry.",
            )
            .with_retryable(true)),
            429 | 500..=599 => Err(failed(
                iceberg::ErrorKind::Unexpected,
                "a server-side problem occurred; the commit state is unknown",
            )),
            // Any other refusal (400, 401, 403) will not pass by retrying: the table stops with it.
            _ => Err(failed(iceberg::ErrorKind::PreconditionFailed, "Nessie refused the commit")),
        }
    }
}

fn unexpected(message: &str, e: impl fmt::Display) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, format!("{message}: {e}"))
}

#[async_trait]
impl Catalog for NessieCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.rest.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.rest.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.rest.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.rest.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.rest.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.rest.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.rest.list_tables(namespace).await
    }

    async fn create_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> iceberg::Result<Table> {
        self.rest.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.rest.load_table(table).await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.rest.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.rest.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.rest.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.rest.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> iceberg::Result<Table> {
        self.rest.register_table(table, metadata_location).await
    }

    async fn update_table(&self, mut commit: TableCommit) -> iceberg::Result<Table> {
        // The table as it is now: the schema ids it uses, and the FileIO the REST catalog builds for it
        // (Nessie's storage settings and ours), which the committed table keeps.
        let base = self.rest.load_table(commit.identifier()).await?;
        let response = self.commits.send(&mut commit, &base).await?;
        Table::builder()
            .identifier(commit.identifier().clone())
            .file_io(base.file_io().clone())
            .metadata(response.metadata)
            .metadata_location(response.metadata_location)
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k2i_api_uris_and_server_roots_map_to_the_branch() {
        for given in [
            "http://nessie:19120/api/v1",
            "http://nessie:19120/api/v2/",
            "http://nessie:19120/api",
            "http://nessie:19120",
            "http://nessie:19120/",
            "http://nessie:19120/iceberg",
            "http://nessie:19120/iceberg/dev",
        ] {
            assert_eq!(iceberg_uri(given, "dev").as_deref(), Ok("http://nessie:19120/iceberg/dev"), "{given}");
        }
        assert_eq!(iceberg_uri("https://gw/nessie/api/v2", "main").as_deref(), Ok("https://gw/nessie/iceberg/main"));
        assert_eq!(iceberg_uri("https://gw/nessie", "main").as_deref(), Ok("https://gw/nessie/iceberg/main"));
    }

    #[test]
    fn a_uri_naming_another_ref_is_refused() {
        let e = iceberg_uri("http://nessie:19120/iceberg/main", "dev").unwrap_err();
        assert_eq!(e, UriError::OtherRef { in_uri: "main".to_owned(), branch: "dev".to_owned() });
        assert!(e.to_string().contains("iceberg.nessie.default_branch is `dev`"), "{e}");
    }

    #[test]
    fn branch_names_follow_nessie_without_slashes() {
        for ok in ["main", "dev", "etl-2024.10", "a_b", "x"] {
            assert_eq!(branch_problem(ok), None, "{ok}");
        }
        for bad in ["", "1x", "-x", "a..b", "a.", "feature/x", "a b", "a|b"] {
            assert!(branch_problem(bad).is_some(), "{bad}");
        }
    }
}
