//! Host names as Istio's analyzers compare them.

/// Kubernetes' cluster domain, as Istio assumes it.
const DOMAIN: &str = "svc.cluster.local";

/// A short name (`reviews`) is a service in `namespace`; anything with a
/// dot is taken as written (Istio's `ConvertHostToFQDN`).
pub fn fqdn(namespace: &str, host: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{namespace}.{DOMAIN}", host.to_ascii_lowercase())
    }
}

/// Whether two hosts can name the same thing: equal, or one a wildcard
/// (`*.example.com`, `*`) covering the other.
pub fn overlap(a: &str, b: &str) -> bool {
    covers(a, b) || covers(b, a)
}

/// Whether `pattern` (maybe a wildcard) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) || pattern == "*" {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `*.b.com` covers `a.b.com` and the narrower wildcard `*.a.b.com`.
    let host = host.strip_prefix('*').unwrap_or(host);
    host.len() > suffix.len()
        && host
            .to_ascii_lowercase()
            .ends_with(&suffix.to_ascii_lowercase())
}

/// Whether an object in `owner` exported with `export_to` is visible from
/// `namespace` (no `exportTo` means everywhere).
pub fn visible(export_to: &[String], owner: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|to| to == "*" || to == namespace || (to == "." && owner == namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_belong_to_their_namespace() {
        assert_eq!(fqdn("foo", "ratings"), "ratings.foo.svc.cluster.local");
        assert_eq!(
            fqdn("foo", "ratings.bar.svc.cluster.local"),
            "ratings.bar.svc.cluster.local"
        );
        assert_eq!(fqdn("foo", "*.example.com"), "*.example.com");
    }

    #[test]
    fn wildcards_overlap_what_they_cover() {
        assert!(overlap("*.testing-02.com", "web.testing-02.com"));
        assert!(overlap("*.d", "*.productpage.d"));
        assert!(overlap("*", "anything.com"));
        assert!(!overlap(
            "*.api.testing-03.com",
            "profile.homepage.testing-03.com"
        ));
        assert!(!overlap("*.testing-01-04.com", "users.testing-02-04.com"));
        assert!(!overlap("a.com", "b.com"));
    }

    #[test]
    fn export_to_limits_visibility() {
        let dot = vec![".".to_string()];
        assert!(visible(&dot, "a", "a"));
        assert!(!visible(&dot, "a", "b"));
        assert!(visible(&[], "a", "b"));
        assert!(visible(&["b".to_string()], "a", "b"));
    }
}
