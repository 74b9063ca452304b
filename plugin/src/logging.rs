//! Forwards the plugin's `tracing` events to the shim's log callback, which owns stderr.
//!
//! The plugin is a separate shared object with its own copy of `tracing`, so it installs its own
//! small subscriber: an event becomes one line, `message key=value ...`, handed to the shim.

use flowlens_abi::{HostCallbacks, LogLevel};
use std::fmt::Write as _;
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};

/// A subscriber that formats each event on one line and passes it to the host.
struct HostSubscriber {
    host: HostCallbacks,
}

fn to_abi_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// Collects an event's message and fields as `message key=value key2="text"`.
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.contains([' ', '"', '=']) || value.is_empty() {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for HostSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        to_abi_level(metadata.level()) <= self.host.max_level
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let mut line = visitor.message;
        line.push_str(&visitor.fields);
        // One log record is one line on stderr: Telegraf reads stderr line by line.
        let line = line.replace(['\n', '\r'], " | ");
        (self.host.log)(to_abi_level(event.metadata().level()), line.as_str().into());
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Routes this library's `tracing` events to the host. The first call wins; later calls (a second
/// collector in the same process) keep the first host's callback.
pub fn install(host: HostCallbacks) {
    let _ = tracing::subscriber::set_global_default(HostSubscriber { host });
}
