use serde::Serialize;

use crate::args::OutputFormat;

/// Prints `value` as pretty JSON, or `text` for people.
pub fn emit(format: OutputFormat, value: &impl Serialize, text: impl FnOnce() -> String) {
    match format {
        OutputFormat::Json => match serde_json::to_string_pretty(value) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: cannot render JSON: {e}"),
        },
        OutputFormat::Text => print!("{}", text()),
    }
}
