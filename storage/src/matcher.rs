//! Label matchers with Prometheus semantics: regexes are fully anchored RE2 (`regex` crate), and
//! a matcher on an absent label sees the empty string.

use crate::error::{Result, StorageError};
use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
    /// For `=~"a|b|c"` with only literal alternatives: the literals, looked up in postings
    /// directly instead of running the regex over every value.
    alternatives: Option<Vec<String>>,
}

impl Matcher {
    pub fn new(op: MatchOp, name: &str, value: &str) -> Result<Matcher> {
        let (re, alternatives) = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                let re = Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| StorageError::BadMatcher(format!("{name}{op}\"{value}\": {e}", op = op.as_str())))?;
                (Some(re), literal_alternatives(value))
            }
            _ => (None, None),
        };
        Ok(Matcher { name: name.to_string(), op, value: value.to_string(), re, alternatives })
    }

    pub fn eq(name: &str, value: &str) -> Matcher {
        Matcher::new(MatchOp::Equal, name, value).expect("equality matchers always build")
    }

    /// Whether a label value (empty when the label is absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Literal values this matcher accepts, when it accepts only a known finite set.
    pub fn set_values(&self) -> Option<Vec<&str>> {
        match self.op {
            MatchOp::Equal if !self.value.is_empty() => Some(vec![self.value.as_str()]),
            MatchOp::Regex => self
                .alternatives
                .as_ref()
                .filter(|a| a.iter().all(|s| !s.is_empty()))
                .map(|a| a.iter().map(|s| s.as_str()).collect()),
            _ => None,
        }
    }
}

impl MatchOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// `foo|bar|baz` made only of plain characters → the literals.
fn literal_alternatives(re: &str) -> Option<Vec<String>> {
    let plain = |s: &str| s.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '/' | ' ' | ','));
    let parts: Vec<String> = re.split('|').map(|s| s.to_string()).collect();
    parts.iter().all(|p| plain(p)).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_alternatives_are_literal() {
        let m = Matcher::new(MatchOp::Regex, "tool", "search|fetch").unwrap();
        assert!(m.matches("search"));
        assert!(!m.matches("searchx"));
        assert_eq!(m.set_values(), Some(vec!["search", "fetch"]));
        let m = Matcher::new(MatchOp::Regex, "tool", "sea.*").unwrap();
        assert!(m.matches("search") && !m.matches("xsearch"));
        assert_eq!(m.set_values(), None);
        assert!(Matcher::new(MatchOp::NotRegex, "a", "").unwrap().matches("x"));
        assert!(!Matcher::new(MatchOp::NotRegex, "a", "").unwrap().matches(""));
        assert!(Matcher::new(MatchOp::Regex, "a", "(").is_err());
    }
}
