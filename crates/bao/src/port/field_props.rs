//! Property tests of the field extractors on arbitrary JSON: a value of the wrong type or a missing field is
//! an error naming the field, never a default.

use proptest::prelude::*;
use serde_json::Value;

use super::{str_field, u64_field};
use crate::client::answer_props::{config, json};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn extractors_return_the_field_or_name_it(body in json(), pointer in "(/data)?/(type|max_lease_ttl|keys|[a-z]{1,4})") {
        match u64_field(&body, &pointer, "GET op") {
            Ok(n) => prop_assert_eq!(body.pointer(&pointer).and_then(Value::as_u64), Some(n)),
            Err(e) => prop_assert!(e.to_string().contains(&pointer)),
        }
        match str_field(&body, &pointer, "GET op") {
            Ok(s) => prop_assert_eq!(body.pointer(&pointer).and_then(Value::as_str), Some(s.as_str())),
            Err(e) => prop_assert!(e.to_string().contains(&pointer)),
        }
    }
}
