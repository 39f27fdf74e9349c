//! Field-level validation errors, with paths like `spec.http[0].route[1].weight`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects every problem of one resource, so a user fixes them in one go.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// `port must be between 1-65535` unless `port` is in range.
    pub fn check_port(&mut self, path: impl Into<String>, port: u32) {
        if !(1..=65535).contains(&port) {
            self.push(path, "port must be between 1-65535");
        }
    }

    /// Istio duration strings ("1s", "100ms", "1h2m3.5s"): must parse and, when
    /// `min` is given, be at least that long.
    pub fn check_duration(
        &mut self,
        path: impl Into<String>,
        value: &str,
        min: Option<std::time::Duration>,
    ) {
        match parse_duration(value) {
            Some(parsed) if min.is_none_or(|min| parsed >= min) => {}
            Some(_) => self.push(
                path,
                format!(
                    "must be a valid duration greater than {:?}",
                    min.unwrap_or_default()
                ),
            ),
            None => self.push(
                path,
                format!("{value:?} is not a duration (e.g. \"1s\", \"250ms\")"),
            ),
        }
    }
}

/// Parses Go/protobuf-style durations: a sequence of `<number><unit>` with
/// units h, m, s, ms, us (µs), ns; decimals allowed.
pub fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if number_end == 0 {
            return None;
        }
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_istio() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
