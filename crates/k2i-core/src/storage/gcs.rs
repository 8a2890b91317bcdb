//! Google Cloud Storage properties, checked and normalized before they reach iceberg-storage-opendal.
//!
//! Two of its readings fail silently, so k2i decides them here, where a wrong value can still be a config
//! error naming the key:
//! - `gcs.credentials-json` must be the service-account (or external-account) JSON *base64-encoded*; a value
//!   that does not decode is dropped without a word and the store falls back to Application Default
//!   Credentials. k2i accepts the JSON itself too (as `{ file = "key.json" }` gives it) and encodes it, and
//!   refuses anything that is neither, without showing the value.
//! - `gcs.no-auth` switches signing off whenever the key is present, even as `"false"`. k2i passes it on only
//!   when true and refuses values that are not booleans.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, ErrorKind, Result};

/// The service-account JSON, base64-encoded (Iceberg's `GCS_CREDENTIALS_JSON`).
const CREDENTIALS_JSON: &str = "gcs.credentials-json";
/// Unsigned requests (an emulator, a public bucket).
const NO_AUTH: &str = "gcs.no-auth";

/// Normalizes the GCS properties of a FileIO in place (see the module doc).
pub(crate) fn normalize(props: &mut HashMap<String, String>) -> Result<()> {
    if let Some(value) = props.get_mut(CREDENTIALS_JSON) {
        *value = credentials_base64(value)?;
    }
    if let Some(value) = props.get(NO_AUTH) {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => {}
            "false" => {
                props.remove(NO_AUTH);
            }
            _ => {
                return Err(Error::new(ErrorKind::Config, "a storage property must be `true` or `false`")
                    .with("key", format!("iceberg.storage.\"{NO_AUTH}\""))
                    .with("found", value.clone()));
            }
        }
    }
    Ok(())
}

/// The credentials JSON as base64: JSON is encoded, base64 of a JSON object is kept, anything else refused.
fn credentials_base64(value: &str) -> Result<String> {
    let is_object = |text: &[u8]| serde_json::from_slice::<serde_json::Value>(text).is_ok_and(|v| v.is_object());
    let trimmed = value.trim();
    if is_object(trimmed.as_bytes()) {
        return Ok(STANDARD.encode(trimmed));
    }
    match STANDARD.decode(trimmed) {
        Ok(decoded) if is_object(&decoded) => Ok(trimmed.to_owned()),
        // The value is a credential: only what is wrong with it is said, never the value.
        _ => Err(Error::new(
            ErrorKind::Config,
            "GCS credentials are neither a service-account JSON object nor one base64-encoded",
        )
        .with("key", format!("iceberg.storage.\"{CREDENTIALS_JSON}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"{"type": "service_account", "client_email": "k2i@p.iam.gserviceaccount.com", "private_key": "k2itest-private"}"#;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn credentials_json_is_base64_encoded_once() {
        let encoded = STANDARD.encode(KEY);
        for given in [KEY.to_owned(), format!("{KEY}\n"), encoded.clone()] {
            let mut p = props(&[(CREDENTIALS_JSON, &given)]);
            normalize(&mut p).unwrap();
            assert_eq!(p[CREDENTIALS_JSON], encoded);
        }
    }

    #[test]
    fn credentials_that_are_not_a_json_object_are_refused_without_showing_them() {
        for bad in ["k2itest-not-json", "[1, 2]", &STANDARD.encode("k2itest-not-json")] {
            let e = normalize(&mut props(&[(CREDENTIALS_JSON, bad)])).unwrap_err().to_string();
            assert!(e.contains("neither a service-account JSON object") && e.contains(CREDENTIALS_JSON), "{e}");
            assert!(!e.contains("k2itest") && !e.contains(bad), "{e}");
        }
    }

    #[test]
    fn no_auth_reaches_the_store_only_when_true() {
        let mut p = props(&[(NO_AUTH, "TRUE")]);
        normalize(&mut p).unwrap();
        assert!(p.contains_key(NO_AUTH));
        let mut p = props(&[(NO_AUTH, "false")]);
        normalize(&mut p).unwrap();
        assert!(!p.contains_key(NO_AUTH), "opendal would skip signing for any value");
        let e = normalize(&mut props(&[(NO_AUTH, "yes please")])).unwrap_err().to_string();
        assert!(e.contains("`true` or `false`") && e.contains(NO_AUTH), "{e}");
    }
}
