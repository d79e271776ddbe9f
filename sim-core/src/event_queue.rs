//! A deterministic event queue: events ordered by time, ties broken by the order they
//! were scheduled, so the same run always sees events in the same order. Timers post
//! their deadlines here; devices will post completions and arrivals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A time-ordered queue of events of type `E`.
#[derive(Debug, Clone)]
pub struct EventQueue<E: Ord> {
    heap: BinaryHeap<Reverse<(u64, u64, E)>>,
    seq: u64,
}

impl<E: Ord> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E: Ord + Copy> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time`.
    pub fn schedule(&mut self, time: u64, event: E) {
        self.seq += 1;
        self.heap.push(Reverse((time, self.seq, event)));
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Removes and returns the earliest event if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, E)> {
        match self.heap.peek() {
            Some(Reverse((t, _, _))) if *t <= now => {
                self.heap.pop().map(|Reverse((t, _, e))| (t, e))
            }
            _ => None,
        }
    }

    /// Removes and returns the earliest event, due or not.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|Reverse((t, _, e))| (t, e))
    }

    /// Number of scheduled events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_order_then_schedule_order() {
        let mut q = EventQueue::new();
        q.schedule(30, 'a');
        q.schedule(10, 'b');
        q.schedule(10, 'c');
        q.schedule(20, 'd');
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(10), Some((10, 'b')));
        assert_eq!(q.pop_due(10), Some((10, 'c')));
        assert_eq!(q.peek_time(), Some(20));
        assert_eq!(q.pop(), Some((20, 'd')));
        assert_eq!(q.pop(), Some((30, 'a')));
        assert!(q.is_empty());
    }
}
