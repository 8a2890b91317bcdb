//! Secured Kafka, end to end against the stack's broker: SASL_SSL with SCRAM-SHA-512 (K2I's
//! `[kafka.security]` keys) and PLAIN (raw `kafka.properties`), mTLS with an encrypted client key, the
//! dead-letter producer over SASL_SSL; and the refusals — a wrong password, a mechanism the listener does
//! not enable, an untrusted broker certificate — stop k2i with exit 2 and an error naming the broker and the
//! cause instead of retrying for ever. No run ever prints a secret. Test data is produced over the
//! plaintext listener; only k2i uses the secured ones. See docs/kafka-security.md.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Setup, eventually, free_port, http_get, json_records, k2i, kill, read_log, read_topic, run,
    spawn_logged, text, wait,
};
use k2i_testkit::{Stack, TestRecord, stack};
use serde_json::json;

/// Exit code of a configuration error (docs/commands.md); refused credentials and certificates are one.
const EXIT_CONFIG: i32 = 2;

/// The stack's secured listeners and test credentials (`scripts/stack.sh env`).
struct Secured {
    sasl_ssl: String,
    mtls: String,
    ca: PathBuf,
    untrusted_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    key_password: String,
    user: String,
    password: String,
}

/// Reads the secured listeners from the environment; a missing variable fails the test (never skips it).
fn secured() -> Secured {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "stack not running or too old: {name} is not set; run scripts/stack.sh up and \
                 eval \"$(scripts/stack.sh env)\""
            )
        })
    };
    let file = |name: &str| {
        let path = PathBuf::from(var(name));
        assert!(path.is_file(), "{name} = {} is not a file", path.display());
        path
    };
    Secured {
        sasl_ssl: var("K2I_TEST_KAFKA_SASL_SSL"),
        mtls: var("K2I_TEST_KAFKA_MTLS"),
        ca: file("K2I_TEST_KAFKA_CA"),
        untrusted_ca: file("K2I_TEST_KAFKA_UNTRUSTED_CA"),
        client_cert: file("K2I_TEST_KAFKA_CLIENT_CERT"),
        client_key: file("K2I_TEST_KAFKA_CLIENT_KEY"),
        key_password: var("K2I_TEST_KAFKA_KEY_PASSWORD"),
        user: var("K2I_TEST_KAFKA_USER"),
        password: var("K2I_TEST_KAFKA_PASSWORD"),
    }
}

impl Secured {
    /// Every secret a run could leak.
    fn secrets(&self) -> [&str; 2] {
        [&self.password, &self.key_password]
    }

    /// `[kafka.security]` for SASL_SSL with `mechanism`, with K2I's keys.
    fn sasl_ssl_keys(&self, mechanism: &str, password: &str, ca: &std::path::Path) -> String {
        format!(
            "\n[kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"{mechanism}\"\nsasl_username = \"{}\"\n\
             sasl_password = \"{password}\"\nssl_ca_location = \"{}\"\n",
            self.user,
            ca.display()
        )
    }
}

/// Writes the test's SQL-catalog config with `servers` as the bootstrap servers and `extra` appended.
fn config(setup: &Setup, stack: &Stack, servers: &str, extra: &str) -> PathBuf {
    let path = setup.sql_config(stack, "json", extra);
    let plain = format!("bootstrap_servers = [\"{}\"]", stack.kafka);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&plain), "{text}");
    std::fs::write(&path, text.replace(&plain, &format!("bootstrap_servers = [\"{servers}\"]"))).unwrap();
    path
}

/// Fails if any secret appears in what a run printed.
fn assert_no_secret(what: &str, printed: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!printed.contains(secret), "{what} printed the secret {secret:?}:\n{printed}");
    }
}

fn all_output(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `k2i ingest --until-caught-up` with `config`: its output, after checking it printed no secret.
fn ingest_caught_up(config: &std::path::Path, envs: &[(&str, &str)], secrets: &[&str]) -> Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    cmd.envs(envs.iter().copied());
    let out = run(cmd);
    assert_no_secret("k2i ingest", &all_output(&out), secrets);
    out
}

/// Produces `per_partition` JSON records to each of two partitions (over the plaintext listener).
async fn produce(stack: &Stack, setup: &Setup, per_partition: i64) -> i64 {
    stack.produce(&setup.topic, json_records(2, per_partition, 0)).await;
    2 * per_partition
}

/// Checks with DuckDB that the table holds exactly `n` distinct records.
fn assert_exact(stack: &Stack, setup: &Setup, n: i64) {
    let seen = setup.inspect_sql(stack, "");
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d from iceberg_scan('{metadata}')"
    ));
    assert_eq!((duck[0]["n"].as_i64(), duck[0]["d"].as_i64()), (Some(n), Some(n)), "DuckDB: {duck:?}");
}

#[tokio::test]
async fn scram_sha_512_over_sasl_ssl_with_k2i_security_keys_ingests_every_record() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-scram", 2).await;
    let n = produce(stack, &setup, 30).await;
    let keys = secured.sasl_ssl_keys("SCRAM-SHA-512", &secured.password, &secured.ca);
    let config = config(&setup, stack, &secured.sasl_ssl, &keys);

    let mut validate = k2i();
    validate.args(["validate", "--print", "--config"]).arg(&config);
    let printed = run(validate);
    assert_eq!(printed.status.code(), Some(0), "{}", text(&printed.stderr));
    assert_no_secret("k2i validate --print", &all_output(&printed), &secured.secrets());
    assert!(text(&printed.stdout).contains("\"sasl.password\" = \"<redacted>\""), "{}", text(&printed.stdout));

    let out = ingest_caught_up(&config, &[], &secured.secrets());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("ingested {n} rows (0 records skipped)")), "{}", text(&out.stdout));
    assert_exact(stack, &setup, n);
}

#[tokio::test]
async fn plain_over_sasl_ssl_with_raw_kafka_properties_ingests_every_record_and_status_shows_no_secret() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-plain", 2).await;
    let n = produce(stack, &setup, 25).await;
    // The password comes from the environment here, the other keys are librdkafka's own names.
    let properties = format!(
        "\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
         \"sasl.username\" = \"{}\"\n\"sasl.password\" = {{ env = \"K2I_TEST_SECRET_KAFKA_PASSWORD\" }}\n\
         \"ssl.ca.location\" = \"{}\"\n[buffer]\nflush_interval = \"300ms\"\n",
        secured.user,
        secured.ca.display()
    );
    let config = config(&setup, stack, &secured.sasl_ssl, &properties);
    let port = free_port();
    let log = setup.dir.path().join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    cmd.env("K2I_TEST_SECRET_KAFKA_PASSWORD", &secured.password)
        .env("K2I_MONITORING__HEALTH_PORT", port.to_string())
        .env("K2I_MONITORING__METRICS_PORT", port.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    eventually("every record committed", Duration::from_secs(90), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(n)).then_some(())
    });
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/status", "/metrics", "/readyz", "/healthz"] {
        let (code, body) = http_get(&format!("{base}{path}")).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        assert_no_secret(path, &body, &secured.secrets());
    }
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    let printed = read_log(&log);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert_no_secret("k2i ingest", &printed, &secured.secrets());
    assert_exact(stack, &setup, n);
}

#[tokio::test]
async fn mtls_with_a_client_certificate_and_an_encrypted_key_ingests_every_record() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-mtls", 2).await;
    let n = produce(stack, &setup, 20).await;
    let keys = format!(
        "\n[kafka.security]\nprotocol = \"SSL\"\nssl_ca_location = \"{}\"\nssl_cert_location = \"{}\"\n\
         ssl_key_location = \"{}\"\nssl_key_password = \"{}\"\n",
        secured.ca.display(),
        secured.client_cert.display(),
        secured.client_key.display(),
        secured.key_password
    );
    let config = config(&setup, stack, &secured.mtls, &keys);
    let out = ingest_caught_up(&config, &[], &secured.secrets());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("ingested {n} rows (0 records skipped)")), "{}", text(&out.stdout));
    assert_exact(stack, &setup, n);
}

#[tokio::test]
async fn the_dead_letter_producer_connects_over_sasl_ssl_like_the_consumer() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-dlq", 1).await;
    let dlq = stack.unique("sec-dlq-letters");
    stack.create_topic(&dlq, 1).await;
    let mut records: Vec<TestRecord> = (0..12).map(|i| TestRecord::value(json!({"n": i}).to_string())).collect();
    records[5] = TestRecord::value("not json over tls").key("k5");
    stack.produce(&setup.topic, records).await;
    let extra = format!(
        "{}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n",
        secured.sasl_ssl_keys("SCRAM-SHA-512", &secured.password, &secured.ca)
    );
    let config = config(&setup, stack, &secured.sasl_ssl, &extra);
    let out = ingest_caught_up(&config, &[], &secured.secrets());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 11 rows (1 record skipped)"), "{}", text(&out.stdout));
    assert_exact(stack, &setup, 11);

    let letters = read_topic(stack, &dlq, 1, Duration::from_secs(1)).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].key.as_deref(), letters[0].value.as_deref()),
        (Some(&b"k5"[..]), Some(&b"not json over tls"[..]))
    );
    assert_eq!(letters[0].headers["k2i.source.offset"], "5");
    assert_eq!(letters[0].headers["k2i.error.kind"], "not_json");
}

/// Runs a refused configuration the way a service runs it (no `--until-caught-up`: librdkafka alone would
/// retry for ever) and returns its standard error, after checking the exit code and the time it took.
fn refused(config: &std::path::Path, secrets: &[&str]) -> String {
    let started = Instant::now();
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(config);
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?} to give up:\n{stderr}", started.elapsed());
    assert_no_secret("a refused k2i ingest", &all_output(&out), secrets);
    stderr
}

/// The error line k2i ends with (`error: …`, the last one printed).
fn error_line(stderr: &str) -> &str {
    stderr.lines().rev().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line:\n{stderr}"))
}

#[tokio::test]
async fn a_wrong_password_stops_k2i_with_exit_2_naming_the_broker_and_the_failed_authentication() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-wrong-pw", 2).await;
    produce(stack, &setup, 5).await;
    let wrong = "k2itest-wrong-secret";
    let keys = secured.sasl_ssl_keys("SCRAM-SHA-512", wrong, &secured.ca);
    let stderr = refused(&config(&setup, stack, &secured.sasl_ssl, &keys), &[&secured.password, wrong]);
    let line = error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: cannot authenticate to the Kafka broker {}: SASL authentication error: ",
            secured.sasl_ssl
        )),
        "{stderr}"
    );
    assert!(line.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"), "{line}");
    assert!(line.contains("client=consumer"), "{line}");
    assert!(line.contains("fix=check kafka.security.sasl_mechanism, sasl_username and sasl_password"), "{line}");
}

#[tokio::test]
async fn a_mechanism_the_listener_does_not_enable_stops_k2i_with_exit_2() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-wrong-mech", 1).await;
    let keys = secured.sasl_ssl_keys("SCRAM-SHA-256", &secured.password, &secured.ca);
    let stderr = refused(&config(&setup, stack, &secured.sasl_ssl, &keys), &secured.secrets());
    let line = error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: cannot authenticate to the Kafka broker {}: SASL SCRAM-SHA-256 mechanism handshake failed",
            secured.sasl_ssl
        )),
        "{stderr}"
    );
    assert!(line.contains("broker's supported mechanisms: SCRAM-SHA-512,PLAIN"), "{line}");
}

#[tokio::test]
async fn an_untrusted_broker_certificate_stops_k2i_with_exit_2_naming_the_tls_handshake() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-untrusted", 1).await;
    let keys = secured.sasl_ssl_keys("SCRAM-SHA-512", &secured.password, &secured.untrusted_ca);
    let stderr = refused(&config(&setup, stack, &secured.sasl_ssl, &keys), &secured.secrets());
    let line = error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: cannot complete the TLS handshake with the Kafka broker {}: SSL handshake failed: ",
            secured.sasl_ssl
        )),
        "{stderr}"
    );
    assert!(line.contains("certificate verify failed"), "{line}");
    assert!(line.contains("fix=check kafka.security.ssl_ca_location"), "{line}");
}

#[tokio::test]
async fn mtls_without_a_client_certificate_stops_k2i_with_exit_2() {
    let (stack, secured) = (stack(), secured());
    let setup = Setup::new(stack, "sec-no-cert", 1).await;
    let keys = format!("\n[kafka.security]\nprotocol = \"SSL\"\nssl_ca_location = \"{}\"\n", secured.ca.display());
    let stderr = refused(&config(&setup, stack, &secured.mtls, &keys), &secured.secrets());
    let line = error_line(&stderr);
    assert!(
        line.starts_with(&format!("error: cannot complete the TLS handshake with the Kafka broker {}: ", secured.mtls)),
        "{stderr}"
    );
    assert!(line.contains("alert bad certificate"), "{line}");
}

#[test]
fn secured_stack_variables_name_real_files() {
    let secured = secured();
    for path in [&secured.ca, &secured.untrusted_ca, &secured.client_cert, &secured.client_key] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{} is not PEM", path.display());
    }
    assert!(
        std::fs::read_to_string(&secured.client_key).unwrap().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "the client key is encrypted (ssl_key_password is exercised)"
    );
}
