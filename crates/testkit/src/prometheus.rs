//! Reading the proxy's Prometheus text exposition in tests, by label
//! subset, so an assertion names only the labels it is about.

/// The sum of the samples of metric `name` (the full sample name, e.g.
/// `istio_requests_total`) whose labels include every pair of `want`.
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let pairs: Vec<(&str, &str)> = labels
                .split("\",")
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key, value.trim_end_matches('"')))
                })
                .collect();
            want.iter()
                .all(|w| pairs.contains(w))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_label_subset() {
        let text = "a_total{x=\"1\",y=\"2\"} 3\na_total{x=\"1\",y=\"3\"} 4\nab_total{x=\"1\"} 9\n";
        assert_eq!(sample(text, "a_total", &[("x", "1")]), 7.0);
        assert_eq!(sample(text, "a_total", &[("y", "3")]), 4.0);
        assert_eq!(sample(text, "a_total", &[("x", "2")]), 0.0);
    }
}
