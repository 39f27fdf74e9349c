//! Request path normalization, Istio's `pathNormalization`: the path a
//! request is routed and authorized by, and forwarded with.
//!
//! Contract: the same bytes reach the policy and the app, so a rule on
//! `/admin` also catches `/public/%2e%2e/admin`, `/%61dmin` and
//! `/public\..\admin`, each of which an app that decodes before it
//! normalizes would serve as `/admin`.
//!
//! - BASE (the default): percent-encoded unreserved characters (RFC 3986
//!   §2.3: `A-Z a-z 0-9 - . _ ~`) are decoded, other escapes get upper-case
//!   hex, backslashes become slashes, `.` and `..` segments are resolved
//!   (never above the root).
//! - MERGE_SLASHES: BASE, then `//` runs merged.
//! - DECODE_AND_MERGE_SLASHES: `%2F` and `%5C` decoded as well (so they
//!   become segment separators), then BASE and merging.
//! - NONE: untouched.
//!
//! The query is never touched. A `%` that starts no valid escape (`%zz`,
//! `%2` at the end) is written `%25`: left alone, it could combine with
//! the characters after it into an escape the app would decode that the
//! policy never saw (`%2%65` decodes to `%2e`, which an app decodes to `.`).
//! So the result is stable: normalizing it again changes nothing.

use std::borrow::Cow;

pub use crate::config::PathNormalization;

/// The normalized form of `path` (no query), borrowed when unchanged.
pub fn normalize(path: &str, mode: PathNormalization) -> Cow<'_, str> {
    if mode == PathNormalization::None {
        return Cow::Borrowed(path);
    }
    let decode_slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    let merge = matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    // The common case: nothing that any step would change. A dot segment
    // always follows a '/' (`%2e` and '\\' are caught by their own bytes),
    // so `/v1.2/file.txt` stays on this path.
    let suspicious = path.bytes().any(|b| matches!(b, b'%' | b'\\'))
        || path.contains("/.")
        || (merge && path.contains("//"))
        || !path.starts_with('/');
    if !suspicious {
        return Cow::Borrowed(path);
    }
    let decoded = decode(path, decode_slashes);
    let resolved = resolve_dots(&decoded, merge);
    if resolved == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(resolved)
    }
}

/// Percent-decoding of unreserved characters (and of `/`, `\` when asked),
/// other escapes upper-cased; backslashes become slashes.
fn decode(path: &str, decode_slashes: bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%'
            && let Some(value) = hex_pair(bytes.get(i + 1..i + 3))
        {
            let slash = matches!(value, b'/' | b'\\');
            if is_unreserved(value) || (decode_slashes && slash) {
                out.push(if value == b'\\' {
                    '/'
                } else {
                    char::from(value)
                });
            } else {
                out.push('%');
                out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            }
            i += 3;
            continue;
        }
        if byte == b'%' {
            out.push_str("%25");
        } else if byte == b'\\' {
            out.push('/');
        } else if byte.is_ascii() {
            out.push(char::from(byte));
        } else {
            // Non-ASCII (HTTP parsers let raw UTF-8 through in targets):
            // kept as it is, one whole character, and the bytes after it
            // still normalized — `/é\..\admin` must not slip past as one
            // opaque segment (found by fuzz/run normalize).
            let Some(character) = path[i..].chars().next() else {
                break;
            };
            out.push(character);
            i += character.len_utf8();
            continue;
        }
        i += 1;
    }
    out
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let high = char::from(pair[0]).to_digit(16)?;
    let low = char::from(pair[1]).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Resolves `.` and `..` segments (RFC 3986 §5.2.4) and, when `merge`,
/// drops empty segments; the result always starts with `/`.
fn resolve_dots(path: &str, merge: bool) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut pieces = body.split('/').peekable();
    // Whether the path ends on a directory (a trailing `/`, `.` or `..`).
    let mut trailing = false;
    while let Some(segment) = pieces.next() {
        let last = pieces.peek().is_none();
        match segment {
            "." => trailing = last,
            ".." => {
                segments.pop();
                trailing = last;
            }
            "" if merge || last => trailing = last,
            other => {
                segments.push(other);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None};
    use super::normalize;

    #[test]
    fn base_resolves_the_tricks_that_reach_admin() {
        for trick in [
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/%61dmin",
            "/public\\..\\admin",
            "/public/../admin",
            "/./admin",
            "/../../admin",
            "/public/.%2e/admin",
        ] {
            assert_eq!(normalize(trick, Base), "/admin", "{trick}");
        }
    }

    #[test]
    fn non_ascii_characters_do_not_stop_normalization() {
        assert_eq!(normalize("/caf\u{e9}\\..\\admin", Base), "/admin");
        assert_eq!(normalize("/\u{e9}/%2e%2e/admin", Base), "/admin");
        assert_eq!(normalize("/d\u{e9}j\u{e0}/./x", Base), "/d\u{e9}j\u{e0}/x");
    }

    #[test]
    fn base_keeps_what_it_must() {
        assert!(matches!(
            normalize("/api/items", Base),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(normalize("/a/b/", Base), "/a/b/");
        assert_eq!(normalize("/a/b/..", Base), "/a/");
        assert_eq!(normalize("/a/.", Base), "/a/");
        assert_eq!(normalize("/", Base), "/");
        assert_eq!(normalize("/..", Base), "/");
        // Reserved escapes stay escaped (hex upper-cased), slashes too.
        assert_eq!(normalize("/a%2fb", Base), "/a%2Fb");
        assert_eq!(normalize("/a%20b", Base), "/a%20b");
        assert_eq!(normalize("/a%zzb", Base), "/a%25zzb");
        assert_eq!(normalize("/a%2", Base), "/a%252");
        // A stray `%` cannot pair with what decoding produces after it.
        assert_eq!(
            normalize("/x/%2%65%2%65/admin", Base),
            "/x/%252e%252e/admin"
        );
        assert_eq!(normalize("/x/%252e", Base), "/x/%252e");
        // Slashes are not merged in BASE.
        assert_eq!(normalize("/a//b", Base), "/a//b");
        assert_eq!(normalize("/file.txt", Base), "/file.txt");
        assert_eq!(normalize("/a/..b/c", Base), "/a/..b/c");
    }

    #[test]
    fn merge_slashes() {
        assert_eq!(normalize("//admin", MergeSlashes), "/admin");
        assert_eq!(normalize("/a///b//", MergeSlashes), "/a/b/");
        assert_eq!(normalize("/a%2fb", MergeSlashes), "/a%2Fb");
    }

    #[test]
    fn decode_and_merge_slashes() {
        assert_eq!(
            normalize("/public%2f..%2fadmin", DecodeAndMergeSlashes),
            "/admin"
        );
        assert_eq!(normalize("/a%5C%5Cb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(normalize("/%2Fadmin", DecodeAndMergeSlashes), "/admin");
    }

    #[test]
    fn none_keeps_everything() {
        assert_eq!(
            normalize("/public/%2e%2e/admin", None),
            "/public/%2e%2e/admin"
        );
    }
}
