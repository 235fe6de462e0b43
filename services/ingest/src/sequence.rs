//! Per-market bookkeeping of Upbit `sequential_id`s: a trade seen before is a duplicate (a reconnect's
//! snapshot repeats the last trade), one older than the newest seen is out of order.
//!
//! Upbit's ids are not contiguous (they encode the trade time, then a counter), so a missing trade cannot
//! be told from an id alone; the feed's own gaps show as reconnects and silences instead.

use std::collections::{HashSet, VecDeque};

/// What one sequential id is, relative to the ids seen before in its market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than every id seen.
    New,
    /// Seen recently: drop it.
    Duplicate,
    /// Not seen, but older than the newest id seen: a real trade delivered late (Upbit interleaves
    /// trades of neighbouring seconds). Kept, and counted.
    OutOfOrder,
}

/// The recent ids of one market, bounded.
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    highest: Option<u64>,
    recent: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl SequenceTracker {
    /// Remembers the last `capacity` ids. An id older than all of those and not among them is called out
    /// of order; if it was in fact a duplicate, JetStream's duplicate window catches it by message id.
    pub fn new(capacity: usize) -> SequenceTracker {
        let capacity = capacity.max(1);
        SequenceTracker {
            highest: None,
            recent: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn observe(&mut self, sequential_id: u64) -> Verdict {
        if self.recent.contains(&sequential_id) {
            return Verdict::Duplicate;
        }
        self.remember(sequential_id);
        match self.highest {
            Some(highest) if sequential_id < highest => Verdict::OutOfOrder,
            _ => {
                self.highest = Some(sequential_id);
                Verdict::New
            }
        }
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn remember(&mut self, sequential_id: u64) {
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.recent.remove(&oldest);
        }
        self.order.push_back(sequential_id);
        self.recent.insert(sequential_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_duplicate_and_late_ids() {
        let mut tracker = SequenceTracker::new(16);
        assert_eq!(tracker.observe(10), Verdict::New);
        assert_eq!(tracker.observe(12), Verdict::New);
        assert_eq!(tracker.observe(12), Verdict::Duplicate);
        assert_eq!(tracker.observe(11), Verdict::OutOfOrder);
        assert_eq!(tracker.observe(11), Verdict::Duplicate);
        assert_eq!(tracker.observe(10), Verdict::Duplicate);
        assert_eq!(tracker.observe(13), Verdict::New);
        assert_eq!(tracker.highest(), Some(13));
    }

    #[test]
    fn memory_is_bounded() {
        let mut tracker = SequenceTracker::new(4);
        for id in 1..=10 {
            assert_eq!(tracker.observe(id), Verdict::New);
        }
        assert_eq!(tracker.recent.len(), 4);
        assert_eq!(tracker.observe(10), Verdict::Duplicate);
        // Forgotten: older than the window, so called late rather than duplicate.
        assert_eq!(tracker.observe(2), Verdict::OutOfOrder);
    }
}
