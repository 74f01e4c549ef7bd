//! "Did you mean": names close to a mistyped one.

/// Names within a small edit distance of `wanted` (or that contain it), closest first, at
/// most three.
pub fn close(wanted: &str, names: &[String]) -> Vec<String> {
    let limit = (wanted.chars().count() / 3).clamp(1, 3);
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|n| {
            let d = distance(wanted, n);
            (d <= limit || (wanted.len() >= 3 && n.contains(wanted))).then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suggests_close_names_closest_first() {
        let all = names(&["shop-api", "shop-web", "billing", "shop-api-canary"]);
        assert_eq!(close("shop-apu", &all), ["shop-api"]);
        assert_eq!(close("shop-wbe", &all), ["shop-web"]);
        assert_eq!(close("billng", &all), ["billing"]);
        assert_eq!(close("api", &all), ["shop-api", "shop-api-canary"]);
        assert!(close("payments", &all).is_empty());
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
