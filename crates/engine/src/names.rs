//! The names and marks meshtrust puts on what it owns (defined once in `core::names`), and the checks on them.

use std::collections::BTreeMap;

pub use meshtrust_core::names::*;

pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())])
}
