//! Durations as people write them in the mesh file (`720h`, `30d`, `10y`, `90m`, `45s`).

use std::fmt;

/// A whole number of seconds. Kept as seconds so that the planner compares plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub u64);

impl Span {
    pub const fn hours(h: u64) -> Self {
        Span(h * 3600)
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    /// Parses `<number><unit>` with unit one of s, m, h, d, y (365 days); units may be chained (`1h30m`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty duration; write a number with a unit, such as 720h or 30d".into());
        }
        let mut total: u64 = 0;
        let mut number = String::new();
        for ch in text.chars() {
            if ch.is_ascii_digit() {
                number.push(ch);
                continue;
            }
            let unit = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'y' => 365 * 86_400,
                _ => {
                    return Err(format!(
                        "{text:?} has an unknown unit {ch:?}; use s, m, h, d or y (for example 720h)"
                    ));
                }
            };
            let n: u64 = number
                .parse()
                .map_err(|_| format!("{text:?} needs a number before {ch:?} (for example 720h)"))?;
            total = total
                .checked_add(
                    n.checked_mul(unit)
                        .ok_or_else(|| format!("{text:?} is too large"))?,
                )
                .ok_or_else(|| format!("{text:?} is too large"))?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!(
                "{text:?} has no unit; write {number}h, {number}d or {number}s"
            ));
        }
        Ok(Span(total))
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Span {
    /// Renders in the largest unit that divides evenly, in the form OpenBao accepts (`s`, `m`, `h`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// A human summary for plan reasons: `12d 4h`, `3h 5m`, `42s`.
pub fn humanize(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{sign}{d}d {h}h")
    } else if h > 0 {
        format!("{sign}{h}h {m}m")
    } else if m > 0 {
        format!("{sign}{m}m {}s", s % 60)
    } else {
        format!("{sign}{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_chains() {
        assert_eq!(Span::parse("720h"), Ok(Span(720 * 3600)));
        assert_eq!(Span::parse("30d"), Ok(Span(30 * 86_400)));
        assert_eq!(Span::parse("10y"), Ok(Span(3650 * 86_400)));
        assert_eq!(Span::parse("1h30m"), Ok(Span(5400)));
        assert_eq!(Span::parse("45s"), Ok(Span(45)));
    }

    #[test]
    fn rejects_bad_input_with_a_hint() {
        assert!(Span::parse("").unwrap_err().contains("720h"));
        assert!(Span::parse("12").unwrap_err().contains("no unit"));
        assert!(Span::parse("3w").unwrap_err().contains("unknown unit"));
        assert!(Span::parse("h").unwrap_err().contains("needs a number"));
        assert!(Span::parse("99999999999999999999y").is_err());
    }

    #[test]
    fn displays_in_openbao_form() {
        assert_eq!(Span(87600 * 3600).to_string(), "87600h");
        assert_eq!(Span(90).to_string(), "90s");
        assert_eq!(Span(120).to_string(), "2m");
        assert_eq!(humanize(90_000), "1d 1h");
        assert_eq!(humanize(-30), "-30s");
    }
}
