//! Listening TCP sockets' drops, from one gather's look at them to the next: how many each
//! listener dropped in between (its queues full: connection attempts that never became a
//! socket), to be counted in its cgroup's `Failures::dropped_as_server`.
//!
//! The kernel counts them on the listener itself (`sk_drops`) from its creation, so a run tells
//! a listener's total so far. Counting starts at flowlens's first run (at start-up): the
//! listeners it sees count from their value then, and any listener first seen at a later run
//! was made since then and counts from 0 (every listener has a file the run visits), unless a
//! run has missed listeners for lack of room in the kernel map: then one first seen later may
//! be an old one that was missed, and counts from its value at first sight too.
#![forbid(unsafe_code)]

use crate::hash::FastMap;
use crate::records::{FlListen, FlListenKey};

/// What a listener had at the last run that saw it.
#[derive(Debug, Clone, Copy)]
struct Known {
    drops: u32,
    /// The run that last saw it.
    seen: u32,
}

/// The listeners of the last runs and their drop counts (bounded: a listener two runs did not
/// see is forgotten, so it holds at most two runs' listeners).
#[derive(Debug, Default)]
pub struct ListenDrops {
    known: FastMap<FlListenKey, Known>,
    /// Runs taken so far.
    runs: u32,
    /// Every run so far saw every listener: a listener first seen now is a new one.
    complete: bool,
}

impl ListenDrops {
    /// No run yet.
    pub fn new() -> ListenDrops {
        ListenDrops {
            complete: true,
            ..ListenDrops::default()
        }
    }

    /// Takes one run's listeners (each listener once or more: processes sharing a listener's
    /// file show it each) and calls `add(cgroup_id, drops)` with what each listener dropped
    /// since the last run, for those that dropped any. `complete`: the run saw every listener
    /// (the kernel map had room for all).
    pub fn update(
        &mut self,
        run: impl IntoIterator<Item = (FlListenKey, FlListen)>,
        complete: bool,
        mut add: impl FnMut(u64, u64),
    ) {
        let first = self.runs == 0;
        self.runs = self.runs.wrapping_add(1);
        let now = self.runs;
        for (key, listen) in run {
            let before = match self.known.get(&key) {
                // Shown by another process in this run already.
                Some(k) if k.seen == now => continue,
                Some(k) => k.drops,
                // New since the last complete run: every drop it has is since flowlens started.
                None if !first && self.complete => 0,
                // There before flowlens started (or possibly missed before): counted from now.
                None => listen.drops,
            };
            // A 32-bit counter: a wrap between two runs is still the right difference.
            let dropped = listen.drops.wrapping_sub(before);
            if dropped > 0 {
                add(listen.cgroup_id, u64::from(dropped));
            }
            self.known.insert(
                key,
                Known {
                    drops: listen.drops,
                    seen: now,
                },
            );
        }
        // Closed listeners are forgotten; one run without a listener is allowed (a file in
        // flight between two processes is held by none).
        self.known.retain(|_, k| now.wrapping_sub(k.seen) < 2);
        self.complete &= complete;
    }

    /// Listeners remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no listener is remembered.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(sk: u64, cgroup_id: u64, drops: u32) -> (FlListenKey, FlListen) {
        (
            FlListenKey { sk, ino: sk + 1000 },
            FlListen {
                cgroup_id,
                netns: 7,
                drops,
                port: 8080,
                _pad: [0; 3],
            },
        )
    }

    /// Runs `run` through `t` and returns the increases per cgroup, summed.
    fn take(
        t: &mut ListenDrops,
        run: &[(FlListenKey, FlListen)],
        complete: bool,
    ) -> Vec<(u64, u64)> {
        let mut out: FastMap<u64, u64> = FastMap::default();
        t.update(run.iter().copied(), complete, |cg, n| {
            *out.entry(cg).or_default() += n
        });
        let mut out: Vec<(u64, u64)> = out.into_iter().collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn listeners_at_the_first_run_count_from_their_value_then() {
        let mut t = ListenDrops::new();
        assert_eq!(
            take(&mut t, &[listener(1, 10, 40), listener(2, 20, 0)], true),
            []
        );
        assert_eq!(
            take(&mut t, &[listener(1, 10, 43), listener(2, 20, 2)], true),
            [(10, 3), (20, 2)]
        );
        assert_eq!(
            take(&mut t, &[listener(1, 10, 43), listener(2, 20, 2)], true),
            []
        );
    }

    #[test]
    fn listeners_first_seen_later_count_from_zero() {
        let mut t = ListenDrops::new();
        assert_eq!(take(&mut t, &[listener(1, 10, 40)], true), []);
        // Two listeners of one cgroup: the new one's 5 drops all happened since start.
        assert_eq!(
            take(&mut t, &[listener(1, 10, 41), listener(2, 10, 5)], true),
            [(10, 6)]
        );
        assert_eq!(
            take(&mut t, &[listener(1, 10, 41), listener(2, 10, 9)], true),
            [(10, 4)]
        );
    }

    #[test]
    fn after_a_run_missed_listeners_new_ones_count_from_first_sight() {
        let mut t = ListenDrops::new();
        // The first run had no room for listener 2 (already dropping): it may be old.
        assert_eq!(take(&mut t, &[listener(1, 10, 0)], false), []);
        assert_eq!(
            take(&mut t, &[listener(1, 10, 0), listener(2, 20, 50)], true),
            []
        );
        assert_eq!(
            take(&mut t, &[listener(1, 10, 0), listener(2, 20, 52)], true),
            [(20, 2)]
        );
        assert_eq!(take(&mut t, &[listener(3, 30, 7)], true), []);
    }

    #[test]
    fn a_listener_shown_by_several_processes_counts_once() {
        let mut t = ListenDrops::new();
        assert_eq!(
            take(&mut t, &[listener(1, 10, 1), listener(1, 10, 1)], true),
            []
        );
        assert_eq!(
            take(
                &mut t,
                &[listener(1, 10, 4), listener(1, 10, 4), listener(1, 10, 4)],
                true
            ),
            [(10, 3)]
        );
        // New and shown twice in its first run.
        assert_eq!(
            take(&mut t, &[listener(2, 10, 2), listener(2, 10, 2)], true),
            [(10, 2)]
        );
    }

    #[test]
    fn the_counter_wraps() {
        let mut t = ListenDrops::new();
        take(&mut t, &[listener(1, 10, u32::MAX - 1)], true);
        assert_eq!(take(&mut t, &[listener(1, 10, 3)], true), [(10, 5)]);
    }

    #[test]
    fn closed_listeners_are_forgotten_after_two_runs_without_them() {
        let mut t = ListenDrops::new();
        take(&mut t, &[listener(1, 10, 5), listener(2, 20, 5)], true);
        // Listener 2 unseen once (its file in flight): still known, its drops since counted.
        assert_eq!(take(&mut t, &[listener(1, 10, 5)], true), []);
        assert_eq!(t.len(), 2);
        assert_eq!(
            take(&mut t, &[listener(1, 10, 5), listener(2, 20, 8)], true),
            [(20, 3)]
        );
        // Closed: forgotten after two runs without it.
        take(&mut t, &[listener(1, 10, 5)], true);
        take(&mut t, &[listener(1, 10, 5)], true);
        assert_eq!(t.len(), 1);
        // A new listener at the same address is another key (another inode): from 0.
        let (mut key, value) = listener(2, 20, 1);
        key.ino += 1;
        assert_eq!(
            take(&mut t, &[listener(1, 10, 5), (key, value)], true),
            [(20, 1)]
        );
    }
}
