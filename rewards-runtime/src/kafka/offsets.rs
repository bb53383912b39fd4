//! Which offsets may be committed: per partition, the lowest offset not yet
//! durable.
//!
//! Workers finish messages out of order (different members of one partition
//! go to different workers), but a Kafka commit means "everything before
//! this offset is done". So the tracker keeps, per assigned partition, the
//! set of delivered offsets not yet acknowledged; the committable position
//! is the smallest of them, or one past the highest delivered offset when
//! none is outstanding.
//!
//! Each assignment of a partition gets a new *epoch*. A rebalance that
//! revokes a partition forgets its state, so acknowledgements of messages
//! delivered under an older epoch are ignored (their partition now belongs
//! to someone else, who will redeliver them; the ledger's idempotency makes
//! that harmless), and workers may skip such messages altogether.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A topic and partition.
pub type TopicPartition = (Arc<str>, i32);

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset delivered (`None`: nothing delivered).
    next: Option<i64>,
    /// The last position committed (or being committed).
    committed: Option<i64>,
    /// The end of the partition was reached (with `enable.partition.eof`).
    at_end: bool,
}

/// The tracker; shared by the source, its acks and the rebalance callback.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    state: Mutex<Tracker>,
}

#[derive(Debug, Default)]
struct Tracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    epochs: u64,
}

impl OffsetTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A partition was assigned: track it under a new epoch.
    pub fn assign(&self, partition: TopicPartition) {
        let mut tracker = self.lock();
        tracker.epochs += 1;
        let epoch = tracker.epochs;
        tracker.partitions.insert(
            partition,
            PartitionState {
                epoch,
                in_flight: BTreeSet::new(),
                next: None,
                committed: None,
                at_end: false,
            },
        );
    }

    /// A partition was revoked: forget it (its pending acks become stale).
    pub fn revoke(&self, partition: &TopicPartition) {
        self.lock().partitions.remove(partition);
    }

    /// Every tracked partition.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        let mut out: Vec<_> = self.lock().partitions.keys().cloned().collect();
        out.sort();
        out
    }

    /// A message was delivered to the pipeline; returns its epoch. A
    /// partition not yet known is tracked from here.
    pub fn delivered(&self, partition: &TopicPartition, offset: i64) -> u64 {
        let mut tracker = self.lock();
        if !tracker.partitions.contains_key(partition) {
            drop(tracker);
            self.assign(partition.clone());
            tracker = self.lock();
        }
        let Some(state) = tracker.partitions.get_mut(partition) else {
            return 0;
        };
        state.in_flight.insert(offset);
        state.at_end = false;
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        state.epoch
    }

    /// A message's outcome is durable.
    pub fn acked(&self, partition: &TopicPartition, offset: i64, epoch: u64) {
        let mut tracker = self.lock();
        if let Some(state) = tracker.partitions.get_mut(partition) {
            if state.epoch == epoch {
                state.in_flight.remove(&offset);
            }
        }
    }

    /// True when the message's partition was revoked (or reassigned) since.
    pub fn is_stale(&self, partition: &TopicPartition, epoch: u64) -> bool {
        self.lock()
            .partitions
            .get(partition)
            .is_none_or(|state| state.epoch != epoch)
    }

    /// Messages delivered and not yet acknowledged, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(|s| s.in_flight.len())
            .sum()
    }

    /// Positions to commit (for `only`, or every partition): those that
    /// moved since the last commit. They are recorded as committed; call
    /// [`OffsetTracker::commit_failed`] if the commit fails.
    pub fn take_committable(&self, only: Option<&[TopicPartition]>) -> Vec<(TopicPartition, i64)> {
        let mut tracker = self.lock();
        let mut out = Vec::new();
        for (partition, state) in tracker.partitions.iter_mut() {
            if only.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            let position = match state.in_flight.first() {
                Some(lowest) => Some(*lowest),
                None => state.next,
            };
            if let Some(position) = position {
                if state.committed.is_none_or(|c| position > c) {
                    state.committed = Some(position);
                    out.push((partition.clone(), position));
                }
            }
        }
        out.sort();
        out
    }

    /// Every partition's last committed position, to commit again: a
    /// broker that acknowledged a commit and then lost it (seen with tansu
    /// across a restart) gets it back even when the partition never moves
    /// again.
    pub fn committed_positions(&self) -> Vec<(TopicPartition, i64)> {
        let tracker = self.lock();
        let mut out: Vec<_> = tracker
            .partitions
            .iter()
            .filter_map(|(partition, state)| Some((partition.clone(), state.committed?)))
            .collect();
        out.sort();
        out
    }

    /// A commit of these positions failed: try them again next time.
    pub fn commit_failed(&self, positions: &[(TopicPartition, i64)]) {
        let mut tracker = self.lock();
        for (partition, position) in positions {
            if let Some(state) = tracker.partitions.get_mut(partition) {
                if state.committed == Some(*position) {
                    state.committed = None;
                }
            }
        }
    }

    /// The end of a partition was reached.
    pub fn reached_end(&self, partition: &TopicPartition) {
        if let Some(state) = self.lock().partitions.get_mut(partition) {
            state.at_end = true;
        }
    }

    /// True when at least one partition is tracked and all are at their end
    /// with nothing in flight.
    pub fn all_at_end(&self) -> bool {
        let tracker = self.lock();
        !tracker.partitions.is_empty()
            && tracker
                .partitions
                .values()
                .all(|s| s.at_end && s.in_flight.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        (Arc::from("tx"), p)
    }

    #[test]
    fn commits_only_below_the_lowest_outstanding_offset() {
        let t = OffsetTracker::default();
        t.assign(tp(0));
        let e = t.delivered(&tp(0), 10);
        t.delivered(&tp(0), 11);
        t.delivered(&tp(0), 12);
        assert_eq!(t.take_committable(None), vec![(tp(0), 10)]);
        t.acked(&tp(0), 12, e);
        t.acked(&tp(0), 11, e);
        assert_eq!(t.take_committable(None), vec![], "10 is still outstanding");
        t.acked(&tp(0), 10, e);
        assert_eq!(t.take_committable(None), vec![(tp(0), 13)]);
        assert_eq!(t.take_committable(None), vec![], "nothing moved");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn revocation_makes_old_acks_stale() {
        let t = OffsetTracker::default();
        t.assign(tp(1));
        let old = t.delivered(&tp(1), 5);
        t.revoke(&tp(1));
        assert!(t.is_stale(&tp(1), old));
        t.assign(tp(1));
        assert!(t.is_stale(&tp(1), old), "a new assignment is a new epoch");
        t.acked(&tp(1), 5, old);
        let new = t.delivered(&tp(1), 5);
        assert!(!t.is_stale(&tp(1), new));
        assert_eq!(t.take_committable(None), vec![(tp(1), 5)]);
    }

    #[test]
    fn failed_commits_are_retried_and_filters_apply() {
        let t = OffsetTracker::default();
        let e0 = t.delivered(&tp(0), 0);
        let e1 = t.delivered(&tp(1), 7);
        t.acked(&tp(0), 0, e0);
        t.acked(&tp(1), 7, e1);
        let only0 = t.take_committable(Some(&[tp(0)]));
        assert_eq!(only0, vec![(tp(0), 1)]);
        t.commit_failed(&only0);
        assert_eq!(t.take_committable(None), vec![(tp(0), 1), (tp(1), 8)]);
    }

    #[test]
    fn committed_positions_are_offered_again() {
        let t = OffsetTracker::default();
        let e0 = t.delivered(&tp(0), 4);
        t.delivered(&tp(1), 9);
        t.acked(&tp(0), 4, e0);
        assert_eq!(t.committed_positions(), vec![]);
        let done = t.take_committable(None);
        assert_eq!(done, vec![(tp(0), 5), (tp(1), 9)]);
        assert_eq!(t.take_committable(None), vec![], "nothing moved");
        assert_eq!(t.committed_positions(), done, "but all can be sent again");
    }

    #[test]
    fn end_of_partitions() {
        let t = OffsetTracker::default();
        assert!(!t.all_at_end());
        t.assign(tp(0));
        t.assign(tp(1));
        t.reached_end(&tp(0));
        assert!(!t.all_at_end());
        t.reached_end(&tp(1));
        assert!(t.all_at_end());
        let e = t.delivered(&tp(1), 3);
        t.acked(&tp(1), 3, e);
        assert!(!t.all_at_end(), "a message came after the end");
        t.reached_end(&tp(1));
        assert!(t.all_at_end());
    }
}
