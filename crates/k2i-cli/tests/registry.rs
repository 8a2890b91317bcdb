//! The Schema Registry client against the stack's real registry (Apicurio's Confluent-compatible API):
//! references resolved, latest by subject, the disk cache carrying a restart through a registry outage, and
//! HTTPS (a custom CA, client certificates) through `scripts/stack/tls_proxy.py` in front of it.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use k2i_core::ErrorKind;
use k2i_core::config::{RegistryConfig, SubjectNameStrategy};
use k2i_core::decode::registry::{RegistryClient, SchemaType, subject};
use k2i_testkit::{SchemaReference, SchemaType as Registered, Stack, stack};
use std::path::Path;

fn config(url: &str, cache: &Path) -> RegistryConfig {
    config_with(url, cache, "")
}

/// `[kafka.format.registry]` with more keys (`extra`: TOML lines).
fn config_with(url: &str, cache: &Path, extra: &str) -> RegistryConfig {
    let config =
        k2i_core::config::from_toml(&config_text(url, cache, extra), Path::new("k2i.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
    config.kafka.format.registry.unwrap()
}

fn config_text(url: &str, cache: &Path, extra: &str) -> String {
    format!(
        "[kafka]\nbootstrap_servers = [\"k:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n\
         [kafka.format]\ntype = \"raw\"\n[kafka.format.registry]\nurl = \"{url}\"\ncache_dir = \"{}\"\nrequest_timeout = \"2s\"\n{extra}[iceberg]\ntable_name = \"t\"\n",
        cache.display()
    )
}

/// A TOML line `key = "path"`.
fn file_key(key: &str, path: &Path) -> String {
    format!("{key} = \"{}\"\n", path.display())
}

#[tokio::test]
async fn a_schema_by_id_comes_with_its_references_and_survives_a_registry_outage_from_the_disk_cache() {
    let stack = stack();
    let topic = stack.unique("registry-client");
    let common_subject = format!("{topic}-common");
    let common = "syntax = \"proto3\";\npackage k2i.test;\nmessage Money { int64 micros = 1; string currency = 2; }\n";
    stack.register_schema(&common_subject, Registered::Protobuf, common, &[]).await;
    let order = "syntax = \"proto3\";\npackage k2i.test;\nimport \"common.proto\";\n\
                 message Order { string id = 1; k2i.test.Money total = 2; }\n";
    let value_subject = subject(SubjectNameStrategy::TopicName, &topic, None).unwrap();
    let reference = SchemaReference { name: "common.proto".into(), subject: common_subject.clone(), version: 1 };
    let id = stack.register_schema(&value_subject, Registered::Protobuf, order, &[reference]).await;

    let cache = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(&config(&stack.registry, cache.path())).unwrap();
    let schema = client.schema_by_id(id).await.unwrap();
    assert_eq!(schema.schema_type, SchemaType::Protobuf);
    assert!(schema.schema.contains("message Order"), "{}", schema.schema);
    assert_eq!(schema.references.len(), 1);
    assert_eq!(schema.references[0].name, "common.proto");
    assert!(schema.references[0].schema.contains("message Money"));
    let latest = client.latest(&value_subject).await.unwrap();
    assert_eq!(latest.id, id);
    assert_eq!(latest.references, schema.references);

    // An unknown id is the record's problem (the error policy decides), named in the error.
    let unknown = client.schema_by_id(987_654_321).await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidRecord, "{unknown}");
    assert!(unknown.to_string().contains("schema_id=987654321"), "{unknown}");

    // The registry is down (nothing listens there): a new client with the warm disk cache still has it.
    let down = "http://127.0.0.1:9";
    let restarted = RegistryClient::new(&config(down, cache.path())).unwrap();
    assert_eq!(*restarted.schema_by_id(id).await.unwrap(), *schema);
    // A cold cache cannot: a transient error that names the registry's URL.
    let cold = tempfile::tempdir().unwrap();
    let error = RegistryClient::new(&config(down, cold.path())).unwrap().schema_by_id(id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(error.to_string().contains(down) && error.to_string().contains("attempts=3"), "{error}");
}

/// Registers a one-message Protobuf schema under a fresh subject; its id.
async fn register_one(stack: &Stack) -> u32 {
    let subject = format!("{}-value", stack.unique("registry-tls"));
    let schema = "syntax = \"proto3\";\npackage k2i.test;\nmessage Ping { string id = 1; }\n";
    stack.register_schema(&subject, Registered::Protobuf, schema, &[]).await
}

/// A client for `url` with its own cold cache (so every answer comes over the wire) and `extra` keys.
fn client(url: &str, extra: &str) -> (RegistryClient, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(&config_with(url, cache.path(), extra)).unwrap_or_else(|e| panic!("{e}"));
    (client, cache)
}

#[tokio::test]
async fn an_https_registry_is_trusted_through_ca_cert_and_without_it_is_a_config_error_that_is_not_retried() {
    let stack = stack();
    let id = register_one(stack).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = stack.tls_proxy(&stack.registry, dir.path(), false);

    // (a) The proxy's CA added to the system's: the schema comes through.
    let (trusting, _cache) = client(&proxy.url, &file_key("ca_cert", &proxy.ca));
    let schema = trusting.schema_by_id(id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schema.schema_type, SchemaType::Protobuf);
    assert!(schema.schema.contains("message Ping"), "{}", schema.schema);

    // (b) The system's trust store alone does not know the proxy's CA. A configuration problem: retrying
    // cannot help, so it is reported at once (no `attempts=`), naming the URL.
    let (system_only, _cache) = client(&proxy.url, "");
    let error = system_only.schema_by_id(id).await.unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config, "{text}");
    assert!(!error.is_retryable(), "{text}");
    assert!(
        text.starts_with(
            "the registry's TLS certificate is not trusted: it is not signed by a CA of the system trust store or \
             of kafka.format.registry.ca_cert"
        ),
        "{text}"
    );
    assert!(text.contains(&format!("url={}/schemas/ids/{id}", proxy.url)) && !text.contains("attempts="), "{text}");
    println!("untrusted: {text}");
}

#[tokio::test]
async fn an_mtls_registry_takes_the_configured_client_certificate_and_refuses_none_or_a_foreign_one() {
    let stack = stack();
    let id = register_one(stack).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = stack.tls_proxy(&stack.registry, &dir.path().join("mtls"), true);
    let ca = file_key("ca_cert", &proxy.ca);

    // (c) With the client certificate its CA signed: through.
    let identity =
        format!("{ca}{}{}", file_key("client_cert", &proxy.client_cert), file_key("client_key", &proxy.client_key));
    let (mtls, _cache) = client(&proxy.url, &identity);
    let schema = mtls.schema_by_id(id).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(schema.schema.contains("message Ping"), "{}", schema.schema);
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains(&format!("\"GET /schemas/ids/{id} HTTP/1.1\" 200")), "{log}");

    // Without one: the registry's alert, as a configuration error naming the URL and the keys to set.
    let (anonymous, _cache) = client(&proxy.url, &ca);
    let error = anonymous.schema_by_id(id).await.unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.starts_with(
            "the registry requires a client certificate (mTLS): set kafka.format.registry.client_cert and client_key"
        ),
        "{text}"
    );
    assert!(text.contains(&format!("url={}/schemas/ids/{id}", proxy.url)) && !text.contains("attempts="), "{text}");
    println!("no client certificate: {text}");

    // A client certificate of another CA: refused, and the message says it was this certificate.
    let other = stack.tls_proxy(&stack.registry, &dir.path().join("other"), false);
    let foreign =
        format!("{ca}{}{}", file_key("client_cert", &other.client_cert), file_key("client_key", &other.client_key));
    let (stranger, _cache) = client(&proxy.url, &foreign);
    let error = stranger.schema_by_id(id).await.unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.starts_with("the registry refused k2i's client certificate (kafka.format.registry.client_cert)"),
        "{text}"
    );
    println!("foreign client certificate: {text}");
}

#[tokio::test]
async fn tls_files_that_cannot_be_used_are_config_errors_naming_the_key_and_the_file() {
    let stack = stack();
    let dir = tempfile::tempdir().unwrap();
    let proxy = stack.tls_proxy(&stack.registry, &dir.path().join("tls"), false);
    let cache = dir.path().join("cache");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let build = |extra: String| match RegistryClient::new(&config_with(&proxy.url, &cache, &extra)) {
        Ok(_) => panic!("a client was built with {extra}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            e.to_string()
        }
    };
    let pair = |cert: &Path, key: &Path| format!("{}{}", file_key("client_cert", cert), file_key("client_key", key));

    let text = build(file_key("ca_cert", &missing));
    assert!(text.starts_with("cannot read the file: "), "{text}");
    assert!(text.ends_with(&format!("(key=kafka.format.registry.ca_cert, file={})", missing.display())), "{text}");
    assert_eq!(
        build(file_key("ca_cert", &not_pem)),
        format!(
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`) (key=kafka.format.registry.ca_cert, file={})",
            not_pem.display()
        )
    );
    // A key is not a certificate.
    assert_eq!(
        build(file_key("ca_cert", &proxy.client_key)),
        format!(
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`) (key=kafka.format.registry.ca_cert, file={})",
            proxy.client_key.display()
        )
    );
    let text = build(pair(&missing, &proxy.client_key));
    assert!(text.ends_with(&format!("(key=kafka.format.registry.client_cert, file={})", missing.display())), "{text}");
    let text = build(pair(&proxy.client_cert, &missing));
    assert!(text.ends_with(&format!("(key=kafka.format.registry.client_key, file={})", missing.display())), "{text}");
    // A certificate is not a key.
    assert_eq!(
        build(pair(&proxy.client_cert, &proxy.client_cert)),
        format!(
            "holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, or an RSA or EC one; not encrypted) \
             (key=kafka.format.registry.client_key, file={})",
            proxy.client_cert.display()
        )
    );
    // The server's key does not belong to the client's certificate.
    assert_eq!(
        build(pair(&proxy.client_cert, &proxy.server_key)),
        format!(
            "is not the private key of the certificate in kafka.format.registry.client_cert \
             (key=kafka.format.registry.client_key, file={}, client_cert={})",
            proxy.server_key.display(),
            proxy.client_cert.display()
        )
    );
    // Every file fine: built (the server's certificate and key are a valid pair too).
    RegistryClient::new(&config_with(
        &proxy.url,
        &cache,
        &format!("{}{}", file_key("ca_cert", &proxy.ca), pair(&proxy.server_cert, &proxy.server_key)),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tls_keys_need_an_https_url_and_a_client_certificate_needs_its_key() {
    let cache = Path::new("/tmp/k2i-unused-cache");
    let problems = |url: &str, extra: &str| {
        let text = config_text(url, cache, extra);
        match k2i_core::config::from_toml(&text, Path::new("k2i.toml"), &Default::default()) {
            Ok(_) => panic!("valid: {text}"),
            Err(e) => e.to_string(),
        }
    };
    let text = problems("http://127.0.0.1:18081", "ca_cert = \"ca.pem\"\n");
    assert!(
        text.contains(
            "kafka.format.registry.ca_cert: applies only to an https:// url (kafka.format.registry.url is http://)"
        ),
        "{text}"
    );
    let text = problems("https://127.0.0.1:18081", "client_cert = \"client.pem\"\n");
    assert!(text.contains("kafka.format.registry: `client_cert` and `client_key` go together (mTLS)"), "{text}");
    let registry = config_with(
        "https://127.0.0.1:18081",
        cache,
        "ca_cert = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client-key.pem\"\n",
    );
    assert_eq!(registry.client_key.as_deref(), Some(Path::new("client-key.pem")));
}
