//! Classification once per distinct statement shape, not once per message: a bounded
//! cache (entries and bytes; scan-resistant S3-FIFO eviction from `quick_cache`) from a
//! statement's [`shape`] to what PostgreSQL's parser said it is. A flood of unique
//! statements costs a parse each and never grows memory past the bound.
//!
//! Only single-statement messages are cached. The statement's own text, which rules may
//! read, is always the message's: the cache keeps where it sits in the message, and the
//! bytes around it (blanks, comments, semicolons) are the same for every text of a shape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::classify::{classify, classify_located, Statement, Unparsable};
use crate::shape::shape;

/// Bytes the cache may hold, keys and values together, and entries, whatever their size:
/// whichever bound is reached first.
pub const CACHE_BYTES: u64 = 16 << 20;
pub const CACHE_ENTRIES: u64 = 100_000;
/// Longer shapes are not cached: such statements are rare and would crowd out the rest.
const MAX_SHAPE: usize = 8 * 1024;
/// What an entry costs beyond its strings (map slot, vectors, counts).
const ENTRY_OVERHEAD: u64 = 96;

/// A classification without its text, and where its text sits in the message.
#[derive(Debug)]
struct Entry {
    statement: Statement,
    /// Bytes of the message before and after the statement's text.
    around: (usize, usize),
    weight: u64,
    /// This entry's statement class, unique for the cache's life.
    class: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Vec<u8>, Arc<Entry>> for ByBytes {
    fn weight(&self, _key: &Vec<u8>, entry: &Arc<Entry>) -> u64 {
        entry.weight
    }
}

/// Counts for metrics.
pub type CacheStats = postern_model::StatementCacheStats;

/// The classification cache of one policy engine, shared by every session.
pub struct StatementCache {
    entries: Cache<Vec<u8>, Arc<Entry>, ByBytes>,
    hits: AtomicU64,
    misses: AtomicU64,
    inserted: AtomicU64,
}

impl Default for StatementCache {
    fn default() -> Self {
        StatementCache::with_bounds(CACHE_ENTRIES, CACHE_BYTES)
    }
}

impl StatementCache {
    /// A cache of at most `entries` entries and `bytes` bytes.
    pub fn with_bounds(entries: u64, bytes: u64) -> StatementCache {
        // Every entry weighs at least ENTRY_OVERHEAD: capping the weight caps the count.
        let capacity = bytes.min(entries.saturating_mul(ENTRY_OVERHEAD));
        StatementCache {
            entries: Cache::with_weighter(
                usize::try_from(entries).unwrap_or(usize::MAX),
                capacity,
                ByBytes,
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
        }
    }

    /// What [`classify`] says of `sql`, from the cache when a statement of the same shape
    /// was classified before.
    pub fn classify(&self, sql: &str) -> Result<Vec<Statement>, Unparsable> {
        Ok(self.classify_with_class(sql)?.0)
    }

    /// [`StatementCache::classify`], and the class of a cached statement: an id that
    /// stands for its kind, tables and functions for as long as it is cached (an entry
    /// cached again gets a new one, so an id never changes its meaning).
    pub fn classify_with_class(
        &self,
        sql: &str,
    ) -> Result<(Vec<Statement>, Option<u64>), Unparsable> {
        let Some(key) = shape(sql).filter(|key| key.len() <= MAX_SHAPE) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok((classify(sql)?, None));
        };
        if let Some(entry) = self.entries.get(&key) {
            let (before, after) = entry.around;
            if let Some(text) = sql.get(before..sql.len().saturating_sub(after)) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let statement = Statement {
                    text: Arc::new(text.to_owned()),
                    ..entry.statement.clone()
                };
                return Ok((vec![statement], Some(entry.class)));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut located = classify_located(sql)?;
        let mut class = None;
        if let [(one, start)] = located.as_slice() {
            let id = self.inserted.fetch_add(1, Ordering::Relaxed);
            self.entries.insert(
                key.clone(),
                Arc::new(Entry::of(sql, one, *start, key.len(), id)),
            );
            class = Some(id);
        }
        let statements = located.drain(..).map(|(statement, _)| statement).collect();
        Ok((statements, class))
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries.len() as u64;
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self
                .inserted
                .load(Ordering::Relaxed)
                .saturating_sub(entries),
            entries,
            bytes: self.entries.weight(),
        }
    }
}

impl Entry {
    /// The entry for `statement`, the only one of `sql`, whose text starts at `start`.
    fn of(sql: &str, statement: &Statement, start: usize, key_len: usize, class: u64) -> Entry {
        let before = start;
        let after = sql.len().saturating_sub(start + statement.text.len());
        let strings: usize = statement
            .tables
            .iter()
            .chain(statement.functions.iter())
            .map(String::len)
            .sum();
        let weight = ENTRY_OVERHEAD + (key_len + strings) as u64;
        Entry {
            statement: Statement {
                text: Arc::default(),
                ..statement.clone()
            },
            around: (before, after),
            weight,
            class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_gives_what_a_parse_would() {
        let cache = StatementCache::default();
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "  SELECT abalance FROM pgbench_accounts WHERE aid = 98765;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 98765 ; ",
            "UPDATE pgbench_accounts SET abalance = abalance + -42 WHERE aid = 7",
            "UPDATE pgbench_accounts SET abalance = abalance + 4242 WHERE aid = 8",
            "/* job 7 */ DELETE FROM public.items WHERE name = 'it''s'",
            "/* job 7 */ DELETE FROM public.items WHERE name = 'other'",
            // The statement's text also stands in a comment before it.
            "/* SELECT 'a' */ SELECT 'a'",
            "/* SELECT 'a' */ SELECT 'pg_sleep'",
        ] {
            assert_eq!(
                cache.classify(sql).unwrap(),
                classify(sql).unwrap(),
                "{sql}"
            );
        }
        let stats = cache.stats();
        // Blanks, signs and semicolons are code: only the last two of each group hit.
        assert_eq!((stats.hits, stats.misses), (2, 7), "{stats:?}");
    }

    #[test]
    fn many_statements_share_their_shape_and_unknowns_stay_unknown() {
        let cache = StatementCache::default();
        for n in 0..100 {
            let sql = format!("SELECT * FROM items WHERE id = {n}");
            assert_eq!(cache.classify(&sql).unwrap()[0].text.as_str(), sql);
        }
        assert_eq!(cache.stats().entries, 1);
        assert_eq!(cache.stats().hits, 99);
        assert!(cache.classify("SELEC nonsense").is_err());
        assert!(cache.classify("SELEC nonsense").is_err());
        // Several statements in one message are classified, not cached.
        assert_eq!(cache.classify("SELECT 1; SELECT 2").unwrap().len(), 2);
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn a_flood_of_distinct_statements_stays_within_the_bounds() {
        let (entries, bytes) = (1_000, 64 * 1024);
        let cache = StatementCache::with_bounds(entries, bytes);
        for n in 0..100_000 {
            // Distinct in code (a column alias), not only in literals.
            let sql = format!("SELECT id AS c{n} FROM items WHERE id = 1");
            cache.classify(&sql).unwrap();
            let stats = cache.stats();
            assert!(stats.entries <= entries, "{stats:?}");
            assert!(stats.bytes <= bytes, "{stats:?}");
        }
        let stats = cache.stats();
        assert_eq!(stats.misses, 100_000);
        assert!(stats.evictions >= 100_000 - entries, "{stats:?}");
    }
}
