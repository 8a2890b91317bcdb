//! The Schema Registry client against the stack's real registry (Apicurio's Confluent-compatible API):
//! references resolved, latest by subject, the disk cache carrying a restart through a registry outage.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use k2i_core::ErrorKind;
use k2i_core::config::{RegistryConfig, SubjectNameStrategy};
use k2i_core::decode::registry::{RegistryClient, SchemaType, subject};
use k2i_testkit::{SchemaReference, SchemaType as Registered, stack};

fn config(url: &str, cache: &std::path::Path) -> RegistryConfig {
    let text = format!(
        "[kafka]\nbootstrap_servers = [\"k:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n\
         [kafka.format]\ntype = \"raw\"\n[kafka.format.registry]\nurl = \"{url}\"\ncache_dir = \"{}\"\nrequest_timeout = \"2s\"\n[iceberg]\ntable_name = \"t\"\n",
        cache.display()
    );
    let config = k2i_core::config::from_toml(&text, std::path::Path::new("k2i.toml"), &Default::default()).unwrap();
    config.kafka.format.registry.unwrap()
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
