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

/// A moment for people: RFC 3339 in UTC and how far it is from `now` (`2026-11-27T10:40:33Z (in 23h 5m)`).
/// Text output uses this; JSON output keeps the Unix seconds.
pub fn when(at: i64, now: i64) -> String {
    format!("{} ({})", rfc3339(at), relative(at, now))
}

/// `in 23h 5m`, `3d 2h ago` or `now`.
pub fn relative(at: i64, now: i64) -> String {
    let delta = at.saturating_sub(now);
    match delta {
        0 => "now".into(),
        d if d > 0 => format!("in {}", humanize(d)),
        d => format!("{} ago", humanize(d.saturating_neg())),
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp (`2026-11-27T10:40:33Z`). Pure arithmetic, so the planner's crate
/// needs no date library; years outside 0..=9999 print as plain seconds.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!("{unix} (Unix time)");
    }
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by 400-year eras.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(i64::from(m <= 2));
    (y, m, d)
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

    #[test]
    fn moments_read_as_rfc3339_and_relative() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_773_633), "2026-11-27T10:00:33Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), format!("{} (Unix time)", i64::MAX));
        assert_eq!(rfc3339(i64::MIN), format!("{} (Unix time)", i64::MIN));
        assert_eq!(relative(100 + 23 * 3600, 100), "in 23h 0m");
        assert_eq!(relative(0, 3 * 86_400), "3d 0h ago");
        assert_eq!(relative(5, 5), "now");
        assert_eq!(
            relative(i64::MIN, i64::MAX),
            format!("{} ago", humanize(i64::MAX))
        );
        assert_eq!(when(86_400, 0), "1970-01-02T00:00:00Z (in 1d 0h)");
    }
}
