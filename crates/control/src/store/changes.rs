//! Which resources changed since a revision: what lets the build loop
//! rebuild only what a change touches (`push::mesh`).
//!
//! The log is bounded: a reader asking about a revision older than what
//! it holds (or about one before a cluster-layer change, which is not
//! logged key by key) gets `None` and rebuilds everything.

use std::collections::BTreeSet;

use super::ResourceKey;

/// Past this many entries the log forgets and starts again: a reader that
/// far behind rebuilds everything anyway.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct ChangeLog {
    /// Revisions after this one are all in `entries`.
    complete_after: u64,
    /// (revision, key changed at it), in revision order.
    entries: Vec<(u64, ResourceKey)>,
}

impl ChangeLog {
    pub(super) fn starting_at(revision: u64) -> Self {
        Self {
            complete_after: revision,
            entries: Vec::new(),
        }
    }

    pub(super) fn record(&mut self, revision: u64, key: ResourceKey) {
        if self.entries.len() >= MAX_ENTRIES {
            self.forget(revision.saturating_sub(1));
        }
        self.entries.push((revision, key));
    }

    /// Changes up to `revision` are not known key by key.
    pub(super) fn forget(&mut self, revision: u64) {
        self.entries.clear();
        self.complete_after = revision;
    }

    pub(super) fn since(&self, revision: u64) -> Option<BTreeSet<ResourceKey>> {
        if revision < self.complete_after {
            return None;
        }
        let first = self.entries.partition_point(|(at, _)| *at <= revision);
        Some(
            self.entries[first..]
                .iter()
                .map(|(_, key)| key.clone())
                .collect(),
        )
    }
}
