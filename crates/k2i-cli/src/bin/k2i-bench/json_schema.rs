//! The JSON Schema shape for the throughput benchmark: the 10-field event of [`crate::protobuf::EVENT`] as a
//! JSON Schema (an object with the same properties in the same order, `ts` a `date-time` string, `device` a
//! nested object, Kafka Connect's `connect.type` on the 32-bit numbers) with the values of
//! [`crate::avro::Event::at`]. The schema is registered under `<topic>-value`; records are compact JSON text
//! framed the way Confluent's serializer frames them (magic 0, schema id).

use std::io::Write as _;

use crate::avro::Event;

/// The 10-field event.
pub const EVENT: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"Event","type":"object","properties":{
  "id":{"type":"integer"},
  "user":{"type":"string"},
  "amount":{"type":"number"},
  "ok":{"type":"boolean"},
  "ts":{"type":"string","format":"date-time"},
  "country":{"type":"string"},
  "quantity":{"type":"integer","connect.type":"int32"},
  "device":{"type":"object","properties":{
    "os":{"type":"string"},
    "version":{"type":"integer","connect.type":"int32"}}},
  "score":{"type":"number","connect.type":"float32"},
  "note":{"type":"string"}}}"#;

/// Record `i`, framed.
pub fn record(schema_id: u32, i: usize) -> Vec<u8> {
    let e = Event::at(i);
    let mut out = Vec::with_capacity(320);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    // The strings need no escaping (letters, digits and hyphens); `{}` of a float is its shortest round trip.
    write!(
        out,
        r#"{{"id":{},"user":"{}","amount":{},"ok":{},"ts":"{}","country":"{}","quantity":{},"device":{{"os":"{}","version":{}}},"score":{},"note":"{}"}}"#,
        e.id,
        e.user,
        e.amount,
        e.ok,
        date_time(e.ts.0, e.ts.1),
        e.country,
        e.quantity,
        e.device_os,
        e.device_version,
        e.score,
        e.note
    )
    .expect("a Vec grows");
    out
}

/// RFC 3339 in UTC with milliseconds of `seconds` (≥ 0) and `nanos` since the Unix epoch.
fn date_time(seconds: i64, nanos: i32) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date of a day count (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        nanos / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn dates_are_utc_rfc_3339() {
        assert_eq!(date_time(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(date_time(1_764_000_000, 42_000_000), "2025-11-24T16:00:00.042Z");
        assert_eq!(date_time(951_782_400 + 86_399, 999_000_000), "2000-02-29T23:59:59.999Z");
        assert_eq!(date_time(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn records_are_framed_json_of_the_event_in_schema_order() {
        let framed = record(7, 42);
        assert_eq!(framed[..5], [0, 0, 0, 0, 7]);
        let text = std::str::from_utf8(&framed[5..]).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        let e = Event::at(42);
        assert_eq!(value["id"], json!(42 * 31 + 1));
        assert_eq!(value["ts"], "2025-11-24T16:00:42.042Z");
        assert_eq!(value["device"]["os"], json!(e.device_os));
        assert_eq!(value["amount"].as_f64(), Some(e.amount));
        assert_eq!(value["score"].as_f64().map(|f| f as f32), Some(e.score));
        let schema: Value = serde_json::from_str(EVENT).unwrap();
        let declared: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut written: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(declared.len(), 10);
        // Whether a serde_json map keeps insertion order depends on its features: compare the sets, and check
        // the text's order directly.
        let mut sorted = declared.clone();
        sorted.sort();
        written.sort();
        assert_eq!(sorted, written);
        let positions: Vec<usize> = declared.iter().map(|k| text.find(&format!("\"{k}\":")).unwrap()).collect();
        assert!(positions.is_sorted(), "{text}");
    }
}
