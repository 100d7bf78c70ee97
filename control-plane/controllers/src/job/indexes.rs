//! Completion indexes as the Job status writes them: ordered, compressed ranges such as
//! `1,3-5,7` (`status.completedIndexes`, `status.failedIndexes`).

use std::collections::BTreeSet;

/// Parses a compressed range string; entries outside `0..completions` and malformed entries
/// are dropped, as upstream does when it reads the status back.
pub fn parse(text: Option<&str>, completions: i32) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    let Some(text) = text else {
        return indexes;
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            continue;
        };
        for index in first.max(0)..=last.min(completions - 1) {
            indexes.insert(index);
        }
    }
    indexes
}

/// The compressed form upstream writes: every run of consecutive indexes longer than one as
/// `first-last`, single ones alone, comma separated.
pub fn format(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &index in indexes {
        run = match run {
            Some((first, last)) if index == last + 1 => Some((first, index)),
            Some(done) => {
                out.push(range(done));
                Some((index, index))
            }
            None => Some((index, index)),
        };
    }
    if let Some(done) = run {
        out.push(range(done));
    }
    out.join(",")
}

fn range((first, last): (i32, i32)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_in_upstream_form() {
        let set: BTreeSet<i32> = [1, 3, 4, 5, 7, 8].into_iter().collect();
        assert_eq!(format(&set), "1,3-5,7-8");
        assert_eq!(parse(Some("1,3-5,7-8"), 10), set);
        assert_eq!(parse(Some("0-20"), 3).len(), 3);
        assert_eq!(format(&BTreeSet::new()), "");
        assert!(parse(None, 3).is_empty());
    }
}
