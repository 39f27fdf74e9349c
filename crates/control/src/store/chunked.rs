//! A large apply decoded a slice of documents at a time.
//!
//! Parsing a 110,000-object apply in one go holds every document's parsed
//! tree at once next to the typed resources made from them (an 851 MiB
//! peak at 5,000 proxies' worth of config). Cut at its `---` lines into
//! slices of [`DOCUMENTS_PER_SLICE`] documents, only one slice's trees are
//! alive at a time. The result is what decoding the whole text gives: the
//! same resources, warnings and problems, with documents numbered across
//! the whole text; a slice the parser refuses sends the whole text to the
//! one-pass decoder, so a syntax error reads exactly as before.

use weft_api::Decoded;

/// Documents parsed together: large enough that slicing costs nothing
/// measurable, small enough that one slice's trees stay a few MiB.
const DOCUMENTS_PER_SLICE: usize = 1_000;

/// `text` decoded as [`weft_api::decode_str`] decodes it.
pub(super) fn decode(text: &str, source: &str) -> Decoded {
    let slices = slices(text, DOCUMENTS_PER_SLICE);
    if slices.len() < 2 {
        return weft_api::decode_str(text, source);
    }
    let mut decoded = Decoded::default();
    let mut documents = 0;
    for slice in slices {
        let Ok(values) = weft_api::parse_documents(slice) else {
            return weft_api::decode_str(text, source);
        };
        for value in values {
            documents += 1;
            decoded.absorb(weft_api::decode::decode_document(value, source, documents));
        }
    }
    decoded
}

/// `text` cut before every `per`-th document marker (a line that is only
/// `---`): each slice but the first starts with its marker, and together
/// they are `text`.
fn slices(text: &str, per: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut markers, mut at) = (0, 0, 0);
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            markers += 1;
            if markers % per == 0 && at > start {
                out.push(&text[start..at]);
                start = at;
            }
        }
        at += line.len();
    }
    out.push(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: we-{i}, namespace: ns}}\nspec:\n  address: 10.0.{}.{}\n  labels: {{app: shop}}\n",
            i / 250,
            i % 250
        )
    }

    #[test]
    fn slices_cover_the_text_and_start_at_markers() {
        let text: String = (0..25).map(entry).collect::<String>() + "---\n\n---\n# end\n";
        let slices = slices(&text, 10);
        assert_eq!(slices.len(), 3);
        assert_eq!(slices.concat(), text);
        assert!(slices[1..].iter().all(|s| s.starts_with("---\n")));
    }

    #[test]
    fn sliced_decoding_is_the_one_pass_decoding() {
        // Empty documents, a comment-only one and a bad object deep inside.
        let mut text = String::from("# header\n");
        for i in 0..2_500 {
            text.push_str(&entry(i));
            if i % 700 == 3 {
                text.push_str("---\n# only a comment\n---\n");
            }
        }
        let bad = text.replace(
            "name: we-2222, namespace: ns}\nspec:\n  address: 10.0.8.222",
            "name: we-2222, namespace: ns}\nspec:\n  address: 10.0.8.222\n  weight: lots",
        );
        for text in [text, bad] {
            let whole = weft_api::decode_str(&text, "big.yaml");
            let sliced = decode(&text, "big.yaml");
            assert_eq!(sliced.resources, whole.resources);
            assert_eq!(sliced.warnings, whole.warnings);
            assert_eq!(
                format!("{:?}", sliced.problems),
                format!("{:?}", whole.problems)
            );
        }
    }
}
