//! Series identity: a sorted set of labels with interned strings.
//!
//! Label strings repeat across series (`job`, `instance`, tool names), so every name and value is
//! interned once and shared as `Arc<str>`; a `Labels` is one allocation of pointer pairs.

use parking_lot::Mutex;
use rustc_hash::FxHashSet;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

pub const METRIC_NAME: &str = "__name__";

/// An interned label name or value.
pub type Sym = Arc<str>;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: Sym,
    pub value: Sym,
}

/// A borrowed label, as decoded straight from a request buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// Labels sorted by name, names unique, no empty values. Cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[Label]>);

impl Labels {
    /// Builds labels from pairs in any order; empty values are dropped (Prometheus treats an
    /// empty value as an absent label). Duplicate names keep the last value.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Labels {
        let mut v: Vec<Label> = pairs
            .iter()
            .filter(|(_, val)| !val.as_ref().is_empty())
            .map(|(n, val)| Label { name: Arc::from(n.as_ref()), value: Arc::from(val.as_ref()) })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.dedup_by(|later, earlier| {
            if later.name == earlier.name {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        Labels(v.into())
    }

    /// Builds labels from already sorted, unique, non-empty refs, interning each string.
    pub fn from_sorted_refs(refs: &[LabelRef<'_>], interner: &Interner) -> Labels {
        Labels(refs.iter().map(|l| Label { name: interner.intern(l.name), value: interner.intern(l.value) }).collect())
    }

    pub fn from_vec_sorted(v: Vec<Label>) -> Labels {
        Labels(v.into())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| (*l.name).cmp(name)).ok().map(|i| &*self.0[i].value)
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// The identity hash used by the head to find a series without building labels.
    pub fn hash_key(&self) -> LabelsHash {
        hash_label_refs(self.0.iter().map(|l| LabelRef { name: &l.name, value: &l.value }))
    }
}

/// A label set's identity in the head. `bucket` (Fx: cheap, runs for every appended sample)
/// picks the table entry; `check` (foldhash, keyed with a per-process random seed, so nobody can
/// craft collisions) confirms it without reading the stored labels, which would cost a cache miss
/// per sample. Two different label sets are confused only if both 64-bit hashes collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelsHash {
    pub bucket: u64,
    pub check: u64,
}

fn check_state() -> &'static foldhash::quality::RandomState {
    static STATE: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(foldhash::quality::RandomState::default)
}

pub fn hash_label_refs<'a>(labels: impl Iterator<Item = LabelRef<'a>>) -> LabelsHash {
    // Both hashers take the label set as one byte string (`name 0xff value 0xff ...`; the
    // separators keep `{a="bc"}` and `{ab="c"}` apart): two long writes are much cheaper than
    // four short ones per label per hasher.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        for l in labels {
            buf.extend_from_slice(l.name.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(l.value.as_bytes());
            buf.push(0xff);
        }
        let mut a = rustc_hash::FxHasher::default();
        a.write(buf);
        let mut b = check_state().build_hasher();
        b.write(buf);
        LabelsHash { bucket: a.finish(), check: b.finish() }
    })
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, &*l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

const INTERN_SHARDS: usize = 16;

/// Deduplicates label strings. Sharded because new series are created from many connections at
/// once; each shard's lock only guards its set and is held for one lookup or insert.
pub struct Interner {
    shards: Box<[Mutex<FxHashSet<Sym>>]>,
    hasher: rustc_hash::FxBuildHasher,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            shards: (0..INTERN_SHARDS).map(|_| Mutex::new(FxHashSet::default())).collect(),
            hasher: rustc_hash::FxBuildHasher,
        }
    }
}

impl Interner {
    pub fn intern(&self, s: &str) -> Sym {
        let mut h = self.hasher.build_hasher();
        s.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % INTERN_SHARDS];
        let mut set = shard.lock();
        if let Some(found) = set.get(s) {
            return found.clone();
        }
        let sym: Sym = Arc::from(s);
        set.insert(sym.clone());
        sym
    }

    /// Drops strings no series refers to any more (called after head garbage collection).
    pub fn gc(&self) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut set = shard.lock();
            let before = set.len();
            set.retain(|s| Arc::strong_count(s) > 1);
            removed += before - set.len();
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_drops_empty_and_hashes_like_refs() {
        let l = Labels::from_pairs(&[("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="2"}"#);
        let refs = [LabelRef { name: "a", value: "1" }, LabelRef { name: "b", value: "2" }];
        assert_eq!(l.hash_key(), hash_label_refs(refs.iter().copied()));
        let other = Labels::from_pairs(&[("a", "1b"), ("b", "")]);
        assert_ne!(l.hash_key(), other.hash_key());
    }

    #[test]
    fn interner_shares_and_collects() {
        let i = Interner::default();
        let a = i.intern("job");
        let b = i.intern("job");
        assert!(Arc::ptr_eq(&a, &b));
        drop(a);
        drop(b);
        assert_eq!(i.gc(), 1);
        assert!(i.is_empty());
    }
}
