//! Postings: sorted lists of series ids per label pair, and matcher evaluation over them. Shared
//! by the head's in-memory index and the blocks' on-disk index through `PostingsSource`.

use crate::matcher::Matcher;

/// An inverted index the matcher logic can read.
pub trait PostingsSource {
    /// All values of a label name, in any order.
    fn label_values(&self, name: &str) -> Vec<String>;
    /// Sorted ids of the series with `name="value"`.
    fn postings(&self, name: &str, value: &str) -> Vec<u64>;
    /// Sorted ids of every series.
    fn all_postings(&self) -> Vec<u64>;
}

/// Ids of the series matching every matcher, sorted. Positive matchers (those that reject the
/// empty string) intersect postings; the others subtract the postings of the values they
/// reject, because a series without the label counts as having the empty value.
pub fn postings_for_matchers(src: &impl PostingsSource, matchers: &[Matcher]) -> Vec<u64> {
    let mut result: Option<Vec<u64>> = None;
    let mut subtract: Vec<&Matcher> = Vec::new();
    // Cheapest first: literal sets before regexes that scan every value.
    let mut ordered: Vec<&Matcher> = matchers.iter().collect();
    ordered.sort_by_key(|m| if m.set_values().is_some() { 0 } else { 1 });
    for m in ordered {
        if m.matches_empty() {
            subtract.push(m);
            continue;
        }
        let lists: Vec<Vec<u64>> = match m.set_values() {
            Some(values) => values.iter().map(|v| src.postings(&m.name, v)).collect(),
            None => {
                src.label_values(&m.name).iter().filter(|v| m.matches(v)).map(|v| src.postings(&m.name, v)).collect()
            }
        };
        let p = union(lists);
        result = Some(match result {
            None => p,
            Some(r) => intersect(&r, &p),
        });
        if result.as_ref().is_some_and(|r| r.is_empty()) {
            return Vec::new();
        }
    }
    let mut result = result.unwrap_or_else(|| src.all_postings());
    for m in subtract {
        let rejected: Vec<Vec<u64>> =
            src.label_values(&m.name).iter().filter(|v| !m.matches(v)).map(|v| src.postings(&m.name, v)).collect();
        result = difference(&result, &union(rejected));
    }
    result
}

pub fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

pub fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut j = 0;
    a.iter()
        .copied()
        .filter(|x| {
            while j < b.len() && b[j] < *x {
                j += 1;
            }
            !(j < b.len() && b[j] == *x)
        })
        .collect()
}

pub fn union(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.pop().unwrap(),
        _ => {
            let mut all: Vec<u64> = lists.concat();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{MatchOp, Matcher};
    use std::collections::BTreeMap;

    struct Mem(BTreeMap<(String, String), Vec<u64>>, Vec<u64>);
    impl PostingsSource for Mem {
        fn label_values(&self, name: &str) -> Vec<String> {
            self.0.keys().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
        }
        fn postings(&self, name: &str, value: &str) -> Vec<u64> {
            self.0.get(&(name.to_string(), value.to_string())).cloned().unwrap_or_default()
        }
        fn all_postings(&self) -> Vec<u64> {
            self.1.clone()
        }
    }

    #[test]
    fn positive_negative_and_absent_labels() {
        let mut m = BTreeMap::new();
        m.insert(("job".into(), "a".into()), vec![1, 2]);
        m.insert(("job".into(), "b".into()), vec![3]);
        m.insert(("tool".into(), "x".into()), vec![2, 3]);
        let src = Mem(m, vec![1, 2, 3, 4]);
        let q = |ms: Vec<Matcher>| postings_for_matchers(&src, &ms);
        assert_eq!(q(vec![Matcher::eq("job", "a")]), vec![1, 2]);
        assert_eq!(q(vec![Matcher::new(MatchOp::NotEqual, "job", "a").unwrap()]), vec![3, 4]);
        assert_eq!(q(vec![Matcher::eq("tool", "")]), vec![1, 4]);
        assert_eq!(q(vec![Matcher::new(MatchOp::Regex, "job", "a|b").unwrap(), Matcher::eq("tool", "x")]), vec![2, 3]);
        assert_eq!(q(vec![Matcher::new(MatchOp::Regex, "job", ".+").unwrap()]), vec![1, 2, 3]);
        assert_eq!(q(vec![Matcher::new(MatchOp::NotRegex, "job", "a|").unwrap()]), vec![3]);
    }
}
