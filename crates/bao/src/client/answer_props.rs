//! Property tests of answer parsing, without HTTP: any bytes with any status either parse or give an error
//! naming the operation; a success status never turns non-JSON into an answer. `PROPTEST_CASES` sets the
//! cases per test.

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;

use super::{Response, check, parse_answer};

pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON values, nested a few levels.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_/]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("data|errors|keys|key_info|type|[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn status() -> impl Strategy<Value = StatusCode> {
    (100u16..600).prop_map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::OK))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_or_name_the_operation(bytes in prop::collection::vec(any::<u8>(), 0..256), status in status()) {
        match parse_answer(&bytes, status, "text/html", "GET sys/mounts/pki") {
            Ok(body) => {
                let json_or_blank = bytes.iter().all(u8::is_ascii_whitespace)
                    || serde_json::from_slice::<Value>(&bytes).is_ok();
                prop_assert!(json_or_blank || !status.is_success(), "non-JSON 2xx accepted: {body:?}");
            }
            Err(e) => prop_assert!(e.to_string().contains("GET sys/mounts/pki")),
        }
    }

    #[test]
    fn truncated_json_on_success_is_an_error(value in json(), cut in any::<usize>()) {
        let text = value.to_string();
        let cut = cut % (text.len() + 1);
        let bytes = &text.as_bytes()[..cut];
        let parsed = parse_answer(bytes, StatusCode::OK, "application/json", "LIST pki/issuers");
        if serde_json::from_slice::<Value>(bytes).is_err() && !bytes.iter().all(u8::is_ascii_whitespace) {
            prop_assert!(parsed.is_err());
        }
    }

    #[test]
    fn any_error_answer_becomes_a_readable_error(body in json(), status in status()) {
        let result = check("GET secret/data/x", Response { status, body });
        if let Err(e) = result {
            let text = e.to_string();
            prop_assert!(text.contains("GET secret/data/x") && !text.contains("Some("), "{text}");
        } else {
            prop_assert!(status.is_success());
        }
    }
}
