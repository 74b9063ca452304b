//! The event queue: the ring buffer's records applied to the flow table by a reader thread as
//! they come, queued only while a gather holds the table, and the rest applied by the gather.

use aya::maps::{MapData, RingBuf};
use flowlens_core::records::FlEvent;
use flowlens_core::FlowTable;
use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Mutex, TryLockError,
};

/// Most records queued in userspace while a gather holds the flow table (about 10 MB); beyond,
/// they wait in the kernel's ring until the gather is done.
const MAX_PENDING_EVENTS: usize = 1 << 16;

/// How often the reader drains the ring when the kernel does not wake it (it wakes it only when
/// the ring is a quarter full: see `emit` in ebpf/maps.bpf.h).
const DRAIN_INTERVAL_MS: i32 = 50;

/// The fewest queued records whose room `pending` keeps after a burst.
const PENDING_KEPT: usize = 1 << 12;

/// Takes a lock even after a panic elsewhere poisoned it: the ring, the queue and the flow
/// table stay usable, and the alternative is no metrics at all.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where records come from: the kernel's ring buffer (tests: a list).
pub(super) trait Records {
    /// Hands the next record's bytes to `f`; `None` when there is none.
    fn next_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R>;
}

impl Records for RingBuf<MapData> {
    fn next_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.next().map(|item| f(&item))
    }
}

/// What records go to: the flow table (tests: a list).
pub(super) trait Apply {
    /// Applies one record.
    fn apply(&mut self, event: &FlEvent);
}

impl Apply for FlowTable {
    fn apply(&mut self, event: &FlEvent) {
        self.apply_event(event);
    }
}

/// The ring buffer, the flow table its records go to, and the records that wait while a gather
/// holds the table. Shared by the reader thread and gathers.
///
/// Records are applied to the table as they are drained, not held until the gather: what a
/// connection costs userspace between gathers is then its slot in the table, not its records
/// (at 20k connections/s and a 10 s interval they were 60 MB).
///
/// Locks: a gather holds the table, then takes the ring, then `pending`; the reader holds the
/// ring, then only tries the table (it never waits for it), then takes `pending`. The one wait
/// with another lock held in opposite orders would be table-then-ring against ring-then-table,
/// and the reader's side of it is a `try_lock`: no deadlock. `pending` is taken last by both and
/// held for no other lock.
pub(super) struct EventQueue<R = RingBuf<MapData>, T = FlowTable> {
    ring: Mutex<R>,
    table: Arc<Mutex<T>>,
    /// Records drained while a gather held the table, in ring order; applied first by the next
    /// holder. Its capacity is kept (at most twice its last use) so that steady churn allocates
    /// nothing.
    pending: Mutex<Vec<FlEvent>>,
    /// Most records in `pending` (`MAX_PENDING_EVENTS`).
    max_pending: usize,
    /// Valid records taken from the ring since start (a record too short to be one is skipped).
    received: AtomicU64,
}

impl<R: Records, T: Apply> EventQueue<R, T> {
    /// A queue from `ring` to `table`.
    pub(super) fn new(ring: R, table: Arc<Mutex<T>>) -> Self {
        EventQueue::bounded(ring, table, MAX_PENDING_EVENTS)
    }

    fn bounded(ring: R, table: Arc<Mutex<T>>, max_pending: usize) -> Self {
        EventQueue {
            ring: Mutex::new(ring),
            table,
            pending: Mutex::new(Vec::new()),
            max_pending,
            received: AtomicU64::new(0),
        }
    }

    /// Valid records read from the ring since start.
    pub(super) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The reader's drain: every record in the ring goes to the table, or, while a gather holds
    /// the table, to `pending` (bounded: past `max_pending` the rest stays in the ring for the
    /// gather to take). The ring stays locked throughout, so two drains never apply their
    /// records out of order.
    pub(super) fn drain(&self) {
        let mut ring = lock(&self.ring);
        let table = match self.table.try_lock() {
            Ok(table) => Some(table),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let received = match table {
            Some(mut table) => self.apply_all(&mut ring, &mut table),
            None => {
                let mut pending = lock(&self.pending);
                let mut received = 0u64;
                while pending.len() < self.max_pending {
                    let Some(event) = ring.next_record(FlEvent::from_bytes) else {
                        break;
                    };
                    if let Some(event) = event {
                        received += 1;
                        pending.push(event);
                    }
                }
                received
            }
        };
        self.received.fetch_add(received, Ordering::Relaxed);
    }

    /// A gather's drain: applies every record the reader queued, then the ring's, to `table`,
    /// whose lock the caller holds.
    pub(super) fn apply_to(&self, table: &mut T) {
        let mut ring = lock(&self.ring);
        let received = self.apply_all(&mut ring, table);
        self.received.fetch_add(received, Ordering::Relaxed);
    }

    /// Applies the queued records, then the ring's, to `table` (whose lock the caller holds).
    /// Returns how many records came from the ring.
    fn apply_all(&self, ring: &mut R, table: &mut T) -> u64 {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            let used = pending.len();
            for event in pending.drain(..) {
                table.apply(&event);
            }
            // A burst leaves a large buffer behind: keep twice what this one held.
            let keep = (used * 2).max(PENDING_KEPT);
            if pending.capacity() > keep {
                pending.shrink_to(keep);
            }
        }
        drop(pending);
        let mut received = 0u64;
        while let Some(event) = ring.next_record(FlEvent::from_bytes) {
            if let Some(event) = event {
                received += 1;
                table.apply(&event);
            }
        }
        received
    }
}

/// The reader thread's loop: drains the ring every `DRAIN_INTERVAL_MS`, or sooner when the
/// kernel wakes it through `ring_fd`, until `stop`.
pub(super) fn read_events(
    queue: Arc<EventQueue>,
    ring_fd: std::os::fd::RawFd,
    stop: Arc<AtomicBool>,
) {
    // This thread reads the ring's shared memory and polls: it needs no capability.
    let _ = crate::privileges::keep_only(0);
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: ring_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd (the ring's fd lives as long as `queue`, which we hold).
        unsafe { libc::poll(&mut pfd, 1, DRAIN_INTERVAL_MS) };
        queue.drain();
        if pfd.revents & libc::POLLIN == 0 {
            // Woken by the timeout: nothing more to wait for before the next period.
            continue;
        }
        // Woken because the ring filled up: let more accumulate instead of spinning per record.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A ring of raw records.
    struct Ring(VecDeque<Vec<u8>>);

    impl Records for Ring {
        fn next_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
            self.0.pop_front().map(|bytes| f(&bytes))
        }
    }

    /// A table that keeps the cookies of the records applied to it, in order.
    #[derive(Default)]
    struct Applied(Vec<u64>);

    impl Apply for Applied {
        fn apply(&mut self, event: &FlEvent) {
            self.0.push(event.cookie);
        }
    }

    /// A whole record of socket `cookie`, as the kernel writes it.
    fn record(cookie: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; std::mem::size_of::<FlEvent>()];
        bytes[..8].copy_from_slice(&cookie.to_ne_bytes());
        bytes
    }

    fn queue(records: Vec<Vec<u8>>, max_pending: usize) -> EventQueue<Ring, Applied> {
        let ring = Ring(records.into());
        EventQueue::bounded(ring, Arc::new(Mutex::new(Applied::default())), max_pending)
    }

    fn ring_len(queue: &EventQueue<Ring, Applied>) -> usize {
        lock(&queue.ring).0.len()
    }

    #[test]
    fn a_drain_applies_whole_records_in_ring_order_and_skips_short_ones() {
        let mut short = record(99);
        short.pop();
        let queue = queue(vec![record(1), short, record(2), Vec::new(), record(3)], 16);
        queue.drain();
        assert_eq!(lock(&queue.table).0, [1, 2, 3]);
        assert_eq!(queue.received(), 3);
        assert_eq!(ring_len(&queue), 0);
    }

    #[test]
    fn while_a_gather_holds_the_table_records_wait_bounded_and_keep_their_order() {
        let queue = queue((1..=5).map(record).collect(), 3);
        let table = queue.table.clone();
        let mut held = lock(&table);
        queue.drain();
        // Nothing applied, three queued, the rest left in the ring for the gather.
        assert!(held.0.is_empty());
        assert_eq!(lock(&queue.pending).len(), 3);
        assert_eq!(ring_len(&queue), 2);
        assert_eq!(queue.received(), 3);
        lock(&queue.ring).0.push_back(record(6));
        queue.apply_to(&mut held);
        assert_eq!(held.0, [1, 2, 3, 4, 5, 6]);
        assert_eq!(queue.received(), 6);
        assert!(lock(&queue.pending).is_empty());
        drop(held);
        // The next drain, with the table free, applies at once.
        lock(&queue.ring).0.push_back(record(7));
        queue.drain();
        assert_eq!(lock(&queue.table).0, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn queued_records_go_before_the_rings_at_the_readers_next_drain() {
        let queue = queue(vec![record(1), record(2)], 16);
        let held = lock(&queue.table);
        queue.drain();
        drop(held);
        lock(&queue.ring).0.push_back(record(3));
        queue.drain();
        assert_eq!(lock(&queue.table).0, [1, 2, 3]);
        assert_eq!(queue.received(), 3);
    }

    #[test]
    fn a_poisoned_table_still_takes_records() {
        let queue = queue(vec![record(1)], 16);
        let table = queue.table.clone();
        let _ = std::thread::spawn(move || {
            let _held = table.lock().unwrap();
            panic!("a gather panicked holding the table");
        })
        .join();
        assert!(queue.table.is_poisoned());
        queue.drain();
        assert_eq!(lock(&queue.table).0, [1]);
    }

    #[test]
    fn a_burst_leaves_at_most_twice_its_room_behind() {
        let burst = PENDING_KEPT * 4;
        let queue = queue((0..burst as u64).map(record).collect(), usize::MAX);
        let mut held = lock(&queue.table);
        queue.drain();
        assert!(lock(&queue.pending).capacity() >= burst);
        queue.apply_to(&mut held);
        assert!(lock(&queue.pending).capacity() <= burst * 2);
        // A smaller burst next: the room shrinks to twice that, never under PENDING_KEPT.
        drop(held);
        let held = lock(&queue.table);
        lock(&queue.ring).0.extend((0..10).map(record));
        queue.drain();
        drop(held);
        queue.drain();
        let capacity = lock(&queue.pending).capacity();
        assert!(
            (PENDING_KEPT..=PENDING_KEPT * 2).contains(&capacity),
            "{capacity}"
        );
    }
}
