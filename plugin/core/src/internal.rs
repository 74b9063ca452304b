//! flowlens's internal events: a drop, a fold, a lost event or a skipped file is recorded here
//! once, which both counts it (the `flowlens:internal` counters) and logs it, rate-limited: its
//! first occurrence, then at most once per [`LOG_INTERVAL_NS`] per kind, with the count since
//! the last line. The core has no logging: the plugin gives a [`LogHook`] that forwards to its
//! logger.
#![forbid(unsafe_code)]

use crate::metrics;

/// What happened. Each kind is one `flowlens:internal` field (docs/metrics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A kernel record read from the ring buffer (`events_received`). Counted, not logged.
    EventReceived,
    /// A kernel event lost: ring buffer full, a program's run skipped by the kernel, a socket
    /// whose close and destruction were both missed (`events_lost`).
    EventLost,
    /// A TCP connect that failed (`connects_failed`): the network's, not flowlens's, so
    /// counted, not logged.
    ConnectFailed,
    /// A socket or flow the kernel map or the table had no room for (`flows_evicted`).
    FlowEvicted,
    /// A series folded into `other` (`series_dropped`, per gather).
    SeriesDropped,
    /// A container metadata file or directory skipped (`metadata_skipped`).
    MetadataSkipped,
    /// A container, pod or namespace name left out (`names_dropped`).
    NameDropped,
    /// A new client flow given no DNAT backend: the gather's lookups were used up, or it
    /// arrived during their last round (`dnat_lookups_skipped`).
    DnatLookupSkipped,
}

/// How many kinds of [`Event`] there are.
const KINDS: usize = 8;

impl Event {
    /// Every kind, in the order of their fields in `flowlens:internal`.
    pub const ALL: [Event; KINDS] = [
        Event::EventReceived,
        Event::EventLost,
        Event::ConnectFailed,
        Event::FlowEvicted,
        Event::SeriesDropped,
        Event::MetadataSkipped,
        Event::NameDropped,
        Event::DnatLookupSkipped,
    ];

    /// The `flowlens:internal` field that counts it.
    pub const fn field(self) -> &'static str {
        match self {
            Event::EventReceived => "events_received",
            Event::EventLost => "events_lost",
            Event::ConnectFailed => "connects_failed",
            Event::FlowEvicted => "flows_evicted",
            Event::SeriesDropped => "series_dropped",
            Event::MetadataSkipped => "metadata_skipped",
            Event::NameDropped => "names_dropped",
            Event::DnatLookupSkipped => "dnat_lookups_skipped",
        }
    }

    /// What a log line says of it; None: counted only.
    const fn message(self) -> Option<&'static str> {
        match self {
            Event::EventReceived | Event::ConnectFailed => None,
            Event::EventLost => Some(
                "kernel events lost (ring buffer full, a program's run skipped, or a socket's \
                 close and destruction both missed)",
            ),
            Event::FlowEvicted => Some(
                "sockets not tracked: the kernel map or the flow table had no room (max_flows)",
            ),
            Event::SeriesDropped => Some(
                "series folded into `other` (max_hosts, max_containers, max_peers_per_container)",
            ),
            Event::MetadataSkipped => Some(
                "container metadata files skipped (malformed, not UTF-8, too large, symbolic \
                 links...)",
            ),
            Event::NameDropped => Some(
                "container, pod or namespace names left out: line protocol cannot carry them \
                 unchanged",
            ),
            Event::DnatLookupSkipped => Some(
                "new client flows given no DNAT backend: the gather's conntrack lookups were \
                 used up (or the flows arrived during their last round)",
            ),
        }
    }
}

/// The shortest time between two log lines of one kind: one minute.
pub(crate) const LOG_INTERVAL_NS: u64 = 60_000_000_000;

/// Where a log line goes (the plugin forwards it to its logger).
pub(crate) type LogHook = fn(&str);

/// The counts of every [`Event`] kind, and when each was last logged.
#[derive(Debug)]
pub struct InternalEvents {
    /// Since start, per kind.
    totals: [u64; KINDS],
    /// Per kind, the last cumulative value [`observe_total`](Self::observe_total) saw.
    observed: [u64; KINDS],
    /// Per kind, occurrences not logged yet.
    unlogged: [u64; KINDS],
    /// Per kind, when its last line was logged (None: never).
    logged_ns: [Option<u64>; KINDS],
    /// Per kind, its total at the last [`end_gather`](Self::end_gather).
    at_last_gather: [u64; KINDS],
    log: LogHook,
}

impl InternalEvents {
    /// No event yet; log lines go to `log`.
    pub fn new(log: LogHook) -> InternalEvents {
        InternalEvents {
            totals: [0; KINDS],
            observed: [0; KINDS],
            unlogged: [0; KINDS],
            logged_ns: [None; KINDS],
            at_last_gather: [0; KINDS],
            log,
        }
    }

    /// Records `n` occurrences of `event` at `now_ns` (a monotonic clock): counts them, and logs
    /// them with those not logged yet when it is the kind's first line or its last is
    /// [`LOG_INTERVAL_NS`] old.
    pub fn record(&mut self, event: Event, n: u64, now_ns: u64) {
        if n == 0 {
            return;
        }
        let i = event as usize;
        self.totals[i] = self.totals[i].saturating_add(n);
        let Some(message) = event.message() else {
            return;
        };
        self.unlogged[i] = self.unlogged[i].saturating_add(n);
        let due =
            self.logged_ns[i].is_none_or(|last| now_ns.saturating_sub(last) >= LOG_INTERVAL_NS);
        if due {
            (self.log)(&format!(
                "{message}: {} since the last report ({} since start, \
                 flowlens:internal,{})",
                self.unlogged[i],
                self.totals[i],
                event.field()
            ));
            self.unlogged[i] = 0;
            self.logged_ns[i] = Some(now_ns);
        }
    }

    /// Records what a cumulative count kept elsewhere (a kernel map, the resolver, the flow
    /// table) added since the last call for `event`: the way counts that are made where this
    /// type cannot be reached come in. A count that went back records nothing.
    pub(crate) fn observe_total(&mut self, event: Event, total: u64, now_ns: u64) {
        let i = event as usize;
        let added = total.saturating_sub(self.observed[i]);
        self.observed[i] = self.observed[i].max(total);
        self.record(event, added, now_ns);
    }

    /// `event`'s occurrences since start.
    pub fn total(&self, event: Event) -> u64 {
        self.totals[event as usize]
    }

    /// `event`'s occurrences since the last [`end_gather`](Self::end_gather).
    pub(crate) fn this_gather(&self, event: Event) -> u64 {
        let i = event as usize;
        self.totals[i] - self.at_last_gather[i]
    }

    /// Ends a gather: [`this_gather`](Self::this_gather) counts from here.
    pub(crate) fn end_gather(&mut self) {
        self.at_last_gather = self.totals;
    }

    /// The counters of `flowlens:internal`, into `values`: cumulative ones since start,
    /// `series_dropped` for this gather.
    pub fn fill(&self, values: &mut metrics::Internal) {
        values.events_received = Some(self.total(Event::EventReceived));
        values.events_lost = self.total(Event::EventLost);
        values.connects_failed = self.total(Event::ConnectFailed);
        values.flows_evicted = self.total(Event::FlowEvicted);
        values.series_dropped = self.this_gather(Event::SeriesDropped);
        values.metadata_skipped = self.total(Event::MetadataSkipped);
        values.names_dropped = self.total(Event::NameDropped);
        values.dnat_lookups_skipped = self.total(Event::DnatLookupSkipped);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// A log hook for tests: keeps this thread's lines for [`take_logged`].
    pub(crate) fn log(line: &str) {
        LOGGED.with(|l| l.borrow_mut().push(line.to_string()));
    }

    /// The lines [`log`] kept on this thread since the last call.
    pub(crate) fn take_logged() -> Vec<String> {
        LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn the_first_occurrence_logs_then_at_most_once_a_minute_with_the_count_since() {
        take_logged();
        let mut events = InternalEvents::new(log);
        events.record(Event::FlowEvicted, 2, 10 * SEC);
        let first = take_logged();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].contains(": 2 since the last report (2 since start"),
            "{first:?}"
        );
        assert!(
            first[0].contains("flowlens:internal,flows_evicted"),
            "{first:?}"
        );
        events.record(Event::FlowEvicted, 3, 11 * SEC);
        events.record(Event::FlowEvicted, 4, 69 * SEC);
        assert!(take_logged().is_empty(), "within the minute: counted only");
        // Another kind has its own minute.
        events.record(Event::EventLost, 1, 69 * SEC);
        assert_eq!(take_logged().len(), 1);
        events.record(Event::FlowEvicted, 1, 70 * SEC);
        let later = take_logged();
        assert_eq!(later.len(), 1);
        assert!(
            later[0].contains(": 8 since the last report (10 since start"),
            "{later:?}"
        );
        assert_eq!(events.total(Event::FlowEvicted), 10);
        events.record(Event::FlowEvicted, 0, 200 * SEC);
        assert!(take_logged().is_empty(), "nothing happened: nothing logged");
    }

    #[test]
    fn counted_only_kinds_never_log() {
        take_logged();
        let mut events = InternalEvents::new(log);
        events.record(Event::ConnectFailed, 5, SEC);
        events.observe_total(Event::EventReceived, 100, SEC);
        assert!(take_logged().is_empty());
        assert_eq!(events.total(Event::ConnectFailed), 5);
        assert_eq!(events.total(Event::EventReceived), 100);
    }

    #[test]
    fn observed_totals_count_what_they_added_and_never_go_back() {
        take_logged();
        let mut events = InternalEvents::new(log);
        events.observe_total(Event::MetadataSkipped, 3, SEC);
        events.observe_total(Event::MetadataSkipped, 3, 2 * SEC);
        events.observe_total(Event::MetadataSkipped, 1, 3 * SEC);
        assert_eq!(events.total(Event::MetadataSkipped), 3);
        events.observe_total(Event::MetadataSkipped, 7, 4 * SEC);
        assert_eq!(events.total(Event::MetadataSkipped), 7);
        // Recorded and observed counts of one kind add up.
        events.record(Event::MetadataSkipped, 1, 5 * SEC);
        assert_eq!(events.total(Event::MetadataSkipped), 8);
        assert_eq!(
            take_logged().len(),
            1,
            "one line: the first; the rest within the minute"
        );
    }

    #[test]
    fn series_dropped_is_per_gather_and_the_others_since_start() {
        let mut events = InternalEvents::new(log);
        events.record(Event::SeriesDropped, 2, SEC);
        events.record(Event::DnatLookupSkipped, 4, SEC);
        let mut values = metrics::Internal::default();
        events.fill(&mut values);
        assert_eq!((values.series_dropped, values.dnat_lookups_skipped), (2, 4));
        events.end_gather();
        events.fill(&mut values);
        assert_eq!((values.series_dropped, values.dnat_lookups_skipped), (0, 4));
        assert_eq!(values.events_received, Some(0));
        take_logged();
    }
}
