//! REST catalog authentication and transport, against the stack's Iceberg REST catalog: a bearer token,
//! OAuth2 client credentials from the testkit's token endpoint (`k2i_testkit::oauth`, the scope sent,
//! short-lived tokens renewed before they expire, a 401 answered with a new token), extra headers with a
//! secret value, HTTPS with a private CA and mTLS (`Stack::tls_proxy`), an untrusted certificate, and the
//! per-request timeout.
//!
//! The testkit's proxy (`k2i_testkit::proxy`) stands in front of the catalog and records every request with
//! its headers; the tests check what each request carried. Every test ingests real records and counts them
//! through the real catalog (pyiceberg), and greps every run's output, and `k2i validate --print`, for the
//! test's secrets.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    Catalog, KillOnDrop, Setup, eventually, free_port, http_get, k2i, kill, raw_records, read_log, run, spawn_logged,
    text, wait,
};
use k2i_testkit::oauth::TokenServer;
use k2i_testkit::proxy::{Fault, Match, Proxy, Seen};
use k2i_testkit::{Stack, stack};
use serde_json::Value;

const TOKEN: &str = "k2i-test-rest-token-7f3a2c";
const HEADER_SECRET: &str = "k2i-test-header-secret-91c2e4";
const CLIENT_ID: &str = "k2i-ingest";
const CLIENT_SECRET: &str = "k2i-test-client-secret-5d8e1b";

/// The environment every run gets: the secrets the configurations name as `{ env = "…" }`.
fn with_secrets(mut cmd: Command) -> Command {
    cmd.env("K2I_TEST_REST_TOKEN", TOKEN)
        .env("K2I_TEST_REST_HEADER", HEADER_SECRET)
        .env("K2I_TEST_REST_CREDENTIAL", format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    cmd
}

fn assert_no_secret(what: &str, output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!output.contains(secret), "{what} printed the secret {secret:?}:\n{output}");
    }
}

fn all_output(out: &Output) -> String {
    text(&out.stdout) + &text(&out.stderr)
}

/// `k2i ingest --until-caught-up`; returns its output (any exit code).
fn catch_up(config: &Path) -> Output {
    let mut cmd = with_secrets(k2i());
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    run(cmd)
}

/// A catch-up run that must ingest `n` rows; none of `secrets` may appear in its output.
fn ingest_ok(config: &Path, n: usize, secrets: &[&str]) -> Output {
    let out = catch_up(config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("ingested {n} rows (0 records skipped)")), "{}", text(&out.stdout));
    assert_no_secret("k2i ingest", &all_output(&out), secrets);
    out
}

/// `k2i validate --print` succeeds and shows each secret as where it comes from (`env = "…"`), never its
/// value.
fn assert_printed_redacted(config: &Path, env_vars: &[&str], secrets: &[&str]) {
    let mut cmd = with_secrets(k2i());
    cmd.args(["validate", "--print", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_secret("k2i validate --print", &all_output(&out), secrets);
    let printed = text(&out.stdout);
    for var in env_vars {
        assert!(printed.contains(&format!("env = \"{var}\"")), "{var} not shown as the source:\n{printed}");
    }
}

/// The table's rows and distinct (partition, offset), read through the catalog itself.
fn assert_rows(stack: &Stack, setup: &Setup, n: i64) {
    let seen = setup.inspect(stack, Catalog::Rest, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(n), Some(n)), "{seen}");
}

/// The catalog requests the proxy saw, each with its bearer token (`None`: no `Authorization`).
fn tokens(proxy: &Proxy) -> Vec<(Seen, Option<String>)> {
    let seen = proxy.requests();
    assert!(seen.len() >= 5, "too few catalog requests: {seen:?}");
    seen.into_iter()
        .map(|s| {
            let token = s.header("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned());
            (s, token)
        })
        .collect()
}

fn rest_extra(keys: &str) -> String {
    format!("[iceberg.rest]\n{keys}\n")
}

#[tokio::test]
async fn a_bearer_token_goes_with_every_catalog_request_and_is_never_printed() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-token", 2).await;
    stack.produce(&setup.topic, raw_records(2, 40)).await;
    let proxy = Proxy::start(&stack.rest);
    let config = setup.rest_config(
        stack,
        "token.toml",
        &proxy.url(),
        "raw",
        &rest_extra("token = { env = \"K2I_TEST_REST_TOKEN\" }"),
    );
    assert_printed_redacted(&config, &["K2I_TEST_REST_TOKEN"], &[TOKEN]);

    ingest_ok(&config, 80, &[TOKEN]);
    assert_rows(stack, &setup, 80);
    for (seen, token) in tokens(&proxy) {
        assert_eq!(token.as_deref(), Some(TOKEN), "{}", k2i_testkit::proxy::describe(&seen));
    }
}

#[tokio::test]
async fn a_refused_bearer_token_stops_at_once_with_exit_2_naming_the_catalog() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-token-refused", 1).await;
    stack.produce(&setup.topic, raw_records(1, 5)).await;
    let proxy = Proxy::start(&stack.rest);
    // A gateway that rejects the token: every request answered 401.
    proxy.rule(Match::any(), Fault::Respond(401));
    let config = setup.rest_config(
        stack,
        "token.toml",
        &proxy.url(),
        "raw",
        &rest_extra("token = { env = \"K2I_TEST_REST_TOKEN\" }"),
    );
    let started = Instant::now();
    let out = catch_up(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "retried for {:?}:\n{stderr}", started.elapsed());
    assert!(stderr.contains("the REST catalog refused iceberg.rest.token (401)"), "{stderr}");
    assert!(stderr.contains(&proxy.url()), "{stderr}");
    assert_eq!(proxy.requests().len(), 1, "not retried");
    assert_no_secret("k2i ingest", &all_output(&out), &[TOKEN]);
}

#[tokio::test]
async fn extra_headers_with_a_secret_value_reach_the_catalog_with_every_request() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-headers", 1).await;
    stack.produce(&setup.topic, raw_records(1, 30)).await;
    let proxy = Proxy::start(&stack.rest);
    let config = setup.rest_config(
        stack,
        "headers.toml",
        &proxy.url(),
        "raw",
        &rest_extra("headers = { \"X-Tenant\" = \"acme\", \"X-Api-Key\" = { env = \"K2I_TEST_REST_HEADER\" } }"),
    );
    assert_printed_redacted(&config, &["K2I_TEST_REST_HEADER"], &[HEADER_SECRET]);

    ingest_ok(&config, 30, &[HEADER_SECRET]);
    assert_rows(stack, &setup, 30);
    for (seen, token) in tokens(&proxy) {
        let what = k2i_testkit::proxy::describe(&seen);
        assert_eq!(seen.header("x-tenant"), Some("acme"), "{what}");
        assert_eq!(seen.header("x-api-key"), Some(HEADER_SECRET), "{what}");
        assert_eq!(token, None, "no authentication configured: {what}");
    }
}

#[tokio::test]
async fn oauth2_client_credentials_fetch_one_token_with_the_scope_and_every_request_carries_it() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-oauth", 2).await;
    stack.produce(&setup.topic, raw_records(2, 25)).await;
    let proxy = Proxy::start(&stack.rest);
    let server = TokenServer::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600));
    let keys = format!(
        "credential = {{ env = \"K2I_TEST_REST_CREDENTIAL\" }}\noauth2_server_uri = \"{}\"\nscope = \"catalog tenant:acme\"",
        server.url()
    );
    let config = setup.rest_config(stack, "oauth.toml", &proxy.url(), "raw", &rest_extra(&keys));
    assert_printed_redacted(&config, &["K2I_TEST_REST_CREDENTIAL"], &[CLIENT_SECRET]);

    let out = ingest_ok(&config, 50, &[CLIENT_SECRET]);
    assert_rows(stack, &setup, 50);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one token for the whole run: {requests:?}");
    let form = &requests[0].form;
    assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(form.get("client_secret").map(String::as_str), Some(CLIENT_SECRET));
    assert_eq!(form.get("scope").map(String::as_str), Some("catalog tenant:acme"));
    let issued = server.issued();
    assert_eq!(issued.len(), 1);
    assert_no_secret("k2i ingest", &all_output(&out), &[&issued[0].token]);
    for (seen, token) in tokens(&proxy) {
        assert_eq!(token.as_deref(), Some(issued[0].token.as_str()), "{}", k2i_testkit::proxy::describe(&seen));
    }
}

#[tokio::test]
async fn short_lived_oauth2_tokens_are_renewed_before_they_expire_during_a_long_ingest() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-oauth-renew", 1).await;
    let proxy = Proxy::start(&stack.rest);
    let server = TokenServer::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3));
    let keys =
        format!("credential = {{ env = \"K2I_TEST_REST_CREDENTIAL\" }}\noauth2_server_uri = \"{}\"", server.url());
    let extra = format!("{}[buffer]\nflush_interval = \"300ms\"\n", rest_extra(&keys));
    let config = setup.rest_config(stack, "oauth.toml", &proxy.url(), "raw", &extra);
    let port = free_port();
    let log = setup.dir.path().join("ingest.log");
    let mut cmd = with_secrets(k2i());
    cmd.args(["ingest", "--config"])
        .arg(&config)
        .env("K2I_MONITORING__HEALTH_PORT", port.to_string())
        .env("K2I_MONITORING__METRICS_PORT", port.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let committed = |n: i64| {
        let url = format!("http://127.0.0.1:{port}/status");
        move || {
            let (_, body) = http_get(&url)?;
            let status: Value = serde_json::from_str(&body).ok()?;
            status["partitions"].as_array()?.iter().any(|p| p["committed"] == n).then_some(())
        }
    };
    // Ten batches a second apart: commits keep coming for longer than three tokens live.
    let started = Instant::now();
    for batch in 1..=10 {
        stack.produce(&setup.topic, raw_records(1, 10)).await;
        eventually("the batch committed", Duration::from_secs(30), committed(batch * 10));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ran = started.elapsed();
    let (_, status) = http_get(&format!("http://127.0.0.1:{port}/status")).unwrap();
    let tokens_now: Vec<String> = server.issued().into_iter().map(|i| i.token).collect();
    let mut secrets: Vec<&str> = tokens_now.iter().map(String::as_str).collect();
    secrets.push(CLIENT_SECRET);
    assert_no_secret("/status", &status, &secrets);
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    let logged = read_log(&log);
    assert_eq!(out.status.code(), Some(0), "{logged}");
    assert_no_secret("k2i ingest", &logged, &[CLIENT_SECRET]);
    assert_rows(stack, &setup, 100);

    let issued = server.issued();
    assert!(ran > Duration::from_secs(9), "{ran:?}");
    assert!(issued.len() >= 3, "{} tokens in {ran:?}: {issued:?}", issued.len());
    assert!(server.requests().iter().all(|r| r.status == 200));
    for (seen, token) in tokens(&proxy) {
        let what = k2i_testkit::proxy::describe(&seen);
        let token = token.unwrap_or_else(|| panic!("no token: {what}"));
        let grant = issued.iter().find(|i| i.token == token).unwrap_or_else(|| panic!("not issued: {what}"));
        assert!(seen.at < grant.expires, "sent {:?} after its token expired: {what}", seen.at - grant.expires);
        assert_no_secret("k2i ingest", &logged, &[&token]);
    }
}

#[tokio::test]
async fn a_catalog_answering_401_gets_a_new_oauth2_token_and_the_call_is_sent_again() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-oauth-401", 1).await;
    stack.produce(&setup.topic, raw_records(1, 20)).await;
    let proxy = Proxy::start(&stack.rest);
    // The first table load (the first commit's base) is refused, as a catalog that revoked the token would.
    let refuse = proxy.once(Match::any().method("GET").path_contains("/tables/"), Fault::Respond(401));
    let server = TokenServer::start(CLIENT_ID, CLIENT_SECRET, Duration::from_secs(3600));
    let keys =
        format!("credential = {{ env = \"K2I_TEST_REST_CREDENTIAL\" }}\noauth2_server_uri = \"{}\"", server.url());
    let config = setup.rest_config(stack, "oauth.toml", &proxy.url(), "raw", &rest_extra(&keys));

    let out = ingest_ok(&config, 20, &[CLIENT_SECRET]);
    assert_rows(stack, &setup, 20);
    assert_eq!(refuse.matched(), 1);
    let issued = server.issued();
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert!(text(&out.stderr).contains("the REST catalog refused the OAuth2 token; fetching a new one"));
    let seen = tokens(&proxy);
    let refused = seen.iter().position(|(s, _)| s.answered == Some(401)).unwrap();
    assert_eq!(seen[refused].1.as_deref(), Some(issued[0].token.as_str()));
    for (s, token) in &seen[refused + 1..] {
        assert_eq!(token.as_deref(), Some(issued[1].token.as_str()), "{}", k2i_testkit::proxy::describe(s));
    }
}

#[tokio::test]
async fn wrong_oauth2_credentials_stop_at_once_with_exit_2_naming_the_token_endpoint() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-oauth-wrong", 1).await;
    stack.produce(&setup.topic, raw_records(1, 5)).await;
    let server = TokenServer::start(CLIENT_ID, "another-secret", Duration::from_secs(3600));
    let keys =
        format!("credential = {{ env = \"K2I_TEST_REST_CREDENTIAL\" }}\noauth2_server_uri = \"{}\"", server.url());
    let config = setup.rest_config(stack, "oauth.toml", &stack.rest, "raw", &rest_extra(&keys));
    let out = catch_up(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the OAuth2 token endpoint refused iceberg.rest.credential"), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(stderr.contains(&server.url()), "{stderr}");
    assert_eq!(server.requests().len(), 1, "not retried: {:?}", server.requests());
    assert_no_secret("k2i ingest", &all_output(&out), &[CLIENT_SECRET]);
}

#[tokio::test]
async fn https_with_a_private_ca_in_ca_cert_reaches_the_catalog_with_the_token() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-tls", 2).await;
    stack.produce(&setup.topic, raw_records(2, 20)).await;
    let proxy = Proxy::start(&stack.rest);
    let tls = stack.tls_proxy(&proxy.url(), &setup.dir.path().join("tls"), false);
    let keys = format!("token = {{ env = \"K2I_TEST_REST_TOKEN\" }}\nca_cert = \"{}\"", tls.ca.display());
    let config = setup.rest_config(stack, "tls.toml", &tls.url, "raw", &rest_extra(&keys));

    ingest_ok(&config, 40, &[TOKEN]);
    assert_rows(stack, &setup, 40);
    for (seen, token) in tokens(&proxy) {
        assert_eq!(token.as_deref(), Some(TOKEN), "{}", k2i_testkit::proxy::describe(&seen));
    }
}

#[tokio::test]
async fn an_untrusted_catalog_certificate_stops_at_once_with_exit_2_naming_the_url_and_the_certificate() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-tls-untrusted", 1).await;
    stack.produce(&setup.topic, raw_records(1, 5)).await;
    let tls = stack.tls_proxy(&stack.rest, &setup.dir.path().join("tls"), false);
    let config = setup.rest_config(stack, "tls.toml", &tls.url, "raw", "");
    let started = Instant::now();
    let out = catch_up(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "retried for {:?}:\n{stderr}", started.elapsed());
    assert!(
        stderr.contains(
            "the REST catalog's TLS certificate is not trusted: it is not signed by a CA of the system \
                         trust store or of iceberg.rest.ca_cert"
        ),
        "{stderr}"
    );
    assert!(stderr.contains(&tls.url), "{stderr}");
}

#[tokio::test]
async fn mtls_presents_client_cert_to_a_catalog_that_requires_one_and_without_one_stops_with_exit_2() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-mtls", 1).await;
    stack.produce(&setup.topic, raw_records(1, 15)).await;
    let tls = stack.tls_proxy(&stack.rest, &setup.dir.path().join("tls"), true);
    let ca = format!("ca_cert = \"{}\"", tls.ca.display());
    let without = setup.rest_config(stack, "without.toml", &tls.url, "raw", &rest_extra(&ca));
    let out = catch_up(&without);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("it requires a client certificate it trusts"), "{stderr}");
    assert!(stderr.contains(&tls.url), "{stderr}");

    let keys =
        format!("{ca}\nclient_cert = \"{}\"\nclient_key = \"{}\"", tls.client_cert.display(), tls.client_key.display());
    let with = setup.rest_config(stack, "with.toml", &tls.url, "raw", &rest_extra(&keys));
    ingest_ok(&with, 15, &[]);
    assert_rows(stack, &setup, 15);
}

#[tokio::test]
async fn a_catalog_request_slower_than_request_timeout_is_abandoned_and_retried() {
    let stack = stack();
    let setup = Setup::new(stack, "rest-timeout", 1).await;
    stack.produce(&setup.topic, raw_records(1, 10)).await;
    let proxy = Proxy::start(&stack.rest);
    let slow = proxy.once(Match::any().method("GET").path_contains("/tables/"), Fault::Delay(Duration::from_secs(6)));
    let config = setup.rest_config(stack, "timeout.toml", &proxy.url(), "raw", &rest_extra("request_timeout = \"1s\""));
    let started = Instant::now();
    let out = ingest_ok(&config, 10, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(slow.matched(), 1);
    assert!(stderr.contains("catalog operation failed; retrying"), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(6), "waited out the slow answer: {:?}", started.elapsed());
    assert_rows(stack, &setup, 10);

    // More than one catalog operation's deadline is refused.
    let long = setup.rest_config(stack, "long.toml", &proxy.url(), "raw", &rest_extra("request_timeout = \"45s\""));
    let mut cmd = k2i();
    cmd.args(["validate", "--config"]).arg(&long);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(all_output(&out).contains("iceberg.rest.request_timeout"), "{}", all_output(&out));
}
