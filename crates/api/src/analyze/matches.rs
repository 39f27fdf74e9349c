//! `virtualservice.MatchesAnalyzer`: rules and matches that can never be
//! used because an earlier one takes every request they would.

use serde_json::{Map, Value};

use super::{INEFFECTIVE_MATCH, Input, Message, Object, UNREACHABLE_RULE};

/// IST0130: a rule after a rule without match (which takes everything),
/// or whose every match repeats an earlier one; IST0131: a match that
/// repeats an earlier one, or (HTTP) whose URI prefix an earlier match
/// with the same or no method already covers.
pub fn analyze(input: &Input, out: &mut Vec<Message>) {
    for vs in input.istio("VirtualService") {
        for section in ["http", "tcp", "tls"] {
            if let Some(rules) = vs.spec.get(section).and_then(Value::as_array) {
                section_rules(vs, section, rules, out);
            }
        }
    }
}

fn section_rules(vs: &Object, section: &str, rules: &[Value], out: &mut Vec<Message>) {
    // Earlier matches: (rule index, the match without its name).
    let mut seen: Vec<(usize, Map<String, Value>)> = Vec::new();
    let mut catch_all: Option<usize> = None;
    for (index, rule) in rules.iter().enumerate() {
        if let Some(at) = catch_all {
            out.push(vs.message(
                UNREACHABLE_RULE,
                format!("{section} rule #{index} is not used: rule #{at} has no match and takes every request"),
            ));
            continue;
        }
        let matches: Vec<Map<String, Value>> = rule
            .get("match")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| {
                let mut m = m.as_object().cloned().unwrap_or_default();
                m.remove("name");
                m
            })
            .collect();
        if matches.is_empty() || matches.iter().any(Map::is_empty) {
            catch_all = Some(index);
        }
        let mut all_repeated = !matches.is_empty();
        for (position, matched) in matches.iter().enumerate() {
            if let Some((earlier, _)) = seen.iter().find(|(_, m)| m == matched) {
                out.push(vs.message(
                    INEFFECTIVE_MATCH,
                    format!("{section} rule #{index} match #{position} is not used: rule #{earlier} has the same match"),
                ));
            } else {
                all_repeated = false;
                if section == "http"
                    && let Some((earlier, _)) = seen.iter().find(|(_, m)| prefix_covers(m, matched))
                {
                    out.push(vs.message(
                        INEFFECTIVE_MATCH,
                        format!("{section} rule #{index} match #{position} is not used: rule #{earlier} has a match covering it"),
                    ));
                }
            }
            seen.push((index, matched.clone()));
        }
        if all_repeated {
            out.push(vs.message(
                UNREACHABLE_RULE,
                format!(
                    "{section} rule #{index} is not used: every match of it is in an earlier rule"
                ),
            ));
        }
    }
}

/// `earlier` takes every request `later` would: both match only on URI
/// prefix (and method), `later`'s prefix extends `earlier`'s, and
/// `earlier` has no method or the same one.
fn prefix_covers(earlier: &Map<String, Value>, later: &Map<String, Value>) -> bool {
    let only_uri_and_method =
        |m: &Map<String, Value>| m.keys().all(|k| k == "uri" || k == "method");
    if !only_uri_and_method(earlier) || !only_uri_and_method(later) {
        return false;
    }
    let prefix = |m: &Map<String, Value>| {
        m.get("uri")
            .and_then(|u| u.get("prefix"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (Some(covering), Some(covered)) = (prefix(earlier), prefix(later)) else {
        return false;
    };
    let method_ok = match earlier.get("method") {
        None => true,
        Some(method) => later.get("method") == Some(method),
    };
    covered.starts_with(&covering) && method_ok
}
