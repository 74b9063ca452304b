//! The shipped Vector configuration (vector.d/flowlens.toml) end to end, into a real InfluxDB 1.x.
//!
//! Vector is not packaged for Debian, so this test does what the configuration makes Vector do,
//! as read in Vector's source (v0.57 and master), with every parameter taken from the shipped
//! file:
//!
//! - `exec` source, `mode = "streaming"` (src/sources/exec/mod.rs): runs `command` with stdin from
//!   /dev/null and stderr discarded unless `include_stderr`; frames stdout with `framing`
//!   (lib/codecs/src/decoding/framing/character_delimited.rs: split on the delimiter, lines over
//!   `max_length` dropped, what is left at EOF is a last frame); `decoding.codec = "bytes"` makes
//!   each frame one log event whose message is the frame (decoding/format/bytes.rs).
//! - `http` sink (src/sinks/http/): batches events (lib/vector-stream partitioned batcher with
//!   `batch.max_events`, `batch.max_bytes`, `batch.timeout_secs` from the batch's first event);
//!   encodes a batch as each event's message (`encoding.codec = "text"`,
//!   lib/codecs/src/encoding/format/text.rs) followed by the framing delimiter
//!   (`framing.method`, encoding/framing/); sends it with `method` to `uri`; retries 408, 429, 5xx
//!   and connection errors up to `request.retry_attempts` times with Fibonacci backoff
//!   (src/sinks/util/http.rs, retries.rs); runs `healthcheck.uri` (HEAD, wants 200) first when set.
//!
//! A key the emulation does not know fails the test: emulate it, or keep it out of the shipped
//! file. The URI's host and port are replaced with the test server's; everything else of it
//! (path, database, precision) is used as written.
//!
//! The run: stand-in pods with real traffic (tests/support/standins.rs), the real `flowlens stream`
//! gathering every second, its output through the emulated Vector into the database the URI names,
//! and the same captured lines POSTed as they are (the `curl /write` path) into a second database.
//! The seed's two InfluxQL queries, everything stored, and every Grafana dashboard query must
//! return the same from both.

use flowlens_dashboards::{Influx, Series, TimeRange};
use flowlens_tests::{
    dashboards::{check_every_query, dashboards, Checked},
    standins::Shop,
    *,
};
use std::{
    io::Read,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

// ------------------------------------------------------------------------------------------
// The configuration, read as Vector reads it.

/// Everything the shipped configuration tells Vector, with Vector's defaults filled in.
#[derive(Debug, Clone)]
struct Pipeline {
    /// The exec source's `command`.
    command: Vec<String>,
    /// `include_stderr` (Vector's default: true).
    include_stderr: bool,
    /// The source's frame delimiter and `max_length` (none: unlimited).
    source_delimiter: u8,
    max_length: Option<usize>,
    /// `oversized_action = "truncate"` (default `drop`).
    truncate_oversized: bool,
    /// The sink's `uri`: `http://<authority><path>`.
    authority: String,
    path: String,
    /// HTTP method, upper case.
    method: String,
    /// The byte the sink's framing puts after each event.
    sink_delimiter: u8,
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
    retry_attempts: usize,
    retry_initial_backoff: Duration,
    retry_max_duration: Duration,
    request_timeout: Duration,
    /// `healthcheck.uri` when the healthcheck is enabled.
    healthcheck: Option<String>,
}

/// The table `value`, every key of which must be in `known` (`what` names it in the failure).
fn table<'a>(value: &'a toml::Value, what: &str, known: &[&str]) -> &'a toml::Table {
    let table = value
        .as_table()
        .unwrap_or_else(|| panic!("{what} is not a table"));
    for key in table.keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}.{key} is not emulated by tests/vector.rs: emulate what Vector does with it, \
             or leave it out of vector.d/flowlens.toml"
        );
    }
    table
}

fn int(value: Option<&toml::Value>, what: &str) -> Option<usize> {
    value.map(|v| {
        let n = v
            .as_integer()
            .unwrap_or_else(|| panic!("{what} is not an integer"));
        usize::try_from(n).unwrap_or_else(|_| panic!("{what} = {n}"))
    })
}

fn secs(value: Option<&toml::Value>, what: &str) -> Option<Duration> {
    value.map(|v| {
        let s = v
            .as_float()
            .or_else(|| v.as_integer().map(|n| n as f64))
            .unwrap_or_else(|| panic!("{what} is not a number"));
        assert!(
            s > 0.0,
            "{what} must be greater than zero (Vector refuses it)"
        );
        Duration::from_secs_f64(s)
    })
}

fn str_of<'a>(value: Option<&'a toml::Value>, what: &str) -> Option<&'a str> {
    value.map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("{what} is not a string"))
    })
}

impl Pipeline {
    fn parse(text: &str) -> Pipeline {
        let root: toml::Value = toml::from_str(text).unwrap();
        let root = table(&root, "(top level)", &["sources", "sinks"]);
        let sources = root["sources"].as_table().unwrap();
        let sinks = root["sinks"].as_table().unwrap();
        assert_eq!(
            sources.len(),
            1,
            "one source: {:?}",
            sources.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            sinks.len(),
            1,
            "one sink: {:?}",
            sinks.keys().collect::<Vec<_>>()
        );
        let (source_name, source) = sources.iter().next().unwrap();
        let (_, sink) = sinks.iter().next().unwrap();

        // src/sources/exec/mod.rs: ExecConfig.
        let source = table(
            source,
            "source",
            &[
                "type",
                "command",
                "mode",
                "include_stderr",
                "streaming",
                "framing",
                "decoding",
            ],
        );
        assert_eq!(str_of(source.get("type"), "type"), Some("exec"));
        assert_eq!(
            str_of(source.get("mode"), "mode"),
            Some("streaming"),
            "the emulation runs the command once, as streaming mode does"
        );
        let command: Vec<String> = source["command"]
            .as_array()
            .expect("command is a list")
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let include_stderr = source
            .get("include_stderr")
            .is_none_or(|v| v.as_bool().unwrap());
        if let Some(streaming) = source.get("streaming") {
            // Respawning after an exit: this run ends with the stop, not an exit.
            table(
                streaming,
                "source.streaming",
                &["respawn_on_exit", "respawn_interval_secs"],
            );
        }
        // decoding: DeserializerConfig, tag `codec`; default `bytes`.
        let codec = match source.get("decoding") {
            Some(d) => str_of(
                table(d, "source.decoding", &["codec"]).get("codec"),
                "codec",
            ),
            None => Some("bytes"),
        };
        assert_eq!(
            codec,
            Some("bytes"),
            "only `bytes` keeps each line as it is (one log event, message = the line)"
        );
        // framing: decoding FramingConfig, tag `method`; the default for `bytes` is
        // newline_delimited (DeserializerConfig::default_stream_framing).
        let (mut source_delimiter, mut max_length, mut truncate_oversized) = (b'\n', None, false);
        if let Some(framing) = source.get("framing") {
            let framing = table(
                framing,
                "source.framing",
                &["method", "newline_delimited", "character_delimited"],
            );
            let options = match str_of(framing.get("method"), "method") {
                Some("newline_delimited") => framing
                    .get("newline_delimited")
                    .map(|o| table(o, "newline_delimited", &["max_length", "oversized_action"])),
                Some("character_delimited") => {
                    let o = table(
                        &framing["character_delimited"],
                        "character_delimited",
                        &["delimiter", "max_length", "oversized_action"],
                    );
                    let d = o["delimiter"].as_str().unwrap();
                    assert_eq!(d.len(), 1, "an ASCII delimiter");
                    source_delimiter = d.as_bytes()[0];
                    Some(o)
                }
                other => panic!("source framing {other:?} is not emulated"),
            };
            if let Some(o) = options {
                max_length = int(o.get("max_length"), "max_length");
                truncate_oversized = match str_of(o.get("oversized_action"), "oversized_action") {
                    None | Some("drop") => false,
                    Some("truncate") => true,
                    Some(other) => panic!("oversized_action = {other:?}"),
                };
            }
        }

        // src/sinks/http/config.rs: HttpSinkConfig, with SinkOuter's inputs and healthcheck.
        let sink = table(
            sink,
            "sink",
            &[
                "type",
                "inputs",
                "uri",
                "method",
                "encoding",
                "framing",
                "batch",
                "request",
                "compression",
                "healthcheck",
            ],
        );
        assert_eq!(str_of(sink.get("type"), "type"), Some("http"));
        let inputs: Vec<&str> = sink["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(inputs, [source_name.as_str()], "the sink reads the source");
        let uri = str_of(sink.get("uri"), "uri").expect("uri");
        assert!(
            !uri.contains("{{") && !uri.contains('%'),
            "{uri}: a template (Vector renders {{{{ }}}} and strftime %-specifiers)"
        );
        let rest = uri
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("{uri}: the emulation speaks plain http"));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let method = str_of(sink.get("method"), "method")
            .unwrap_or("post")
            .to_ascii_uppercase();
        // encoding: SerializerConfig, tag `codec`.
        let encoding = table(&sink["encoding"], "sink.encoding", &["codec"]);
        assert_eq!(
            str_of(encoding.get("codec"), "codec"),
            Some("text"),
            "only `text` writes each event's message as it is"
        );
        // framing: encoding FramingConfig, tag `method`; the default for `text` is
        // newline_delimited (effective_framer_config).
        let sink_delimiter = match sink.get("framing") {
            None => b'\n',
            Some(f) => {
                let f = table(f, "sink.framing", &["method", "character_delimited"]);
                match str_of(f.get("method"), "method") {
                    Some("newline_delimited") => b'\n',
                    Some("character_delimited") => {
                        let o = table(
                            &f["character_delimited"],
                            "sink.framing.character_delimited",
                            &["delimiter"],
                        );
                        o["delimiter"].as_str().unwrap().as_bytes()[0]
                    }
                    other => panic!("sink framing {other:?} is not emulated"),
                }
            }
        };
        assert!(
            matches!(
                str_of(sink.get("compression"), "compression"),
                None | Some("none")
            ),
            "compression is not emulated"
        );
        // batch: BatchConfig<RealtimeSizeBasedDefaultBatchSettings>: max_bytes 10 MB, no event
        // limit, 1 s (src/sinks/util/batch.rs).
        let empty = toml::Value::Table(Default::default());
        let batch = table(
            sink.get("batch").unwrap_or(&empty),
            "sink.batch",
            &["max_events", "max_bytes", "timeout_secs"],
        );
        let max_events = int(batch.get("max_events"), "max_events").unwrap_or(usize::MAX);
        let max_bytes = int(batch.get("max_bytes"), "max_bytes").unwrap_or(10_000_000);
        assert!(max_events > 0 && max_bytes > 0, "Vector refuses zero");
        let timeout =
            secs(batch.get("timeout_secs"), "timeout_secs").unwrap_or(Duration::from_secs(1));
        // request: RequestConfig = TowerRequestConfig (src/sinks/util/service.rs) + headers.
        let request = table(
            sink.get("request").unwrap_or(&empty),
            "sink.request",
            &[
                "retry_attempts",
                "retry_initial_backoff_secs",
                "retry_max_duration_secs",
                "timeout_secs",
            ],
        );
        let retry_attempts =
            int(request.get("retry_attempts"), "retry_attempts").unwrap_or(isize::MAX as usize);
        let retry_initial_backoff = secs(
            request.get("retry_initial_backoff_secs"),
            "retry_initial_backoff_secs",
        )
        .unwrap_or(Duration::from_secs(1));
        let retry_max_duration = secs(
            request.get("retry_max_duration_secs"),
            "retry_max_duration_secs",
        )
        .unwrap_or(Duration::from_secs(30));
        let request_timeout =
            secs(request.get("timeout_secs"), "timeout_secs").unwrap_or(Duration::from_secs(60));
        // healthcheck: SinkHealthcheckOptions (src/config/sink.rs); the http sink checks only
        // when `uri` is set.
        let healthcheck = sink.get("healthcheck").and_then(|h| {
            let h = table(h, "sink.healthcheck", &["enabled", "uri"]);
            let enabled = h.get("enabled").is_none_or(|v| v.as_bool().unwrap());
            let uri = str_of(h.get("uri"), "uri")?;
            enabled.then(|| uri.to_string())
        });

        Pipeline {
            command,
            include_stderr,
            source_delimiter,
            max_length,
            truncate_oversized,
            authority: authority.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            method,
            sink_delimiter,
            max_events,
            max_bytes,
            timeout,
            retry_attempts,
            retry_initial_backoff,
            retry_max_duration,
            request_timeout,
            healthcheck,
        }
    }

    /// The `db` parameter of the URI.
    fn database(&self) -> String {
        let query = self.path.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix("db="))
            .expect("the URI names its database (db=...)")
            .to_string()
    }
}

// ------------------------------------------------------------------------------------------
// HTTP, as the sink sends it.

fn http(
    authority: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpReply> {
    // The http sink's Content-Type for the text codec (HttpSinkConfig::validate).
    http_request(
        authority,
        method,
        path,
        &[("Content-Type", "text/plain")],
        body,
        timeout,
    )
}

// ------------------------------------------------------------------------------------------
// The emulated Vector.

/// One request the sink sent and InfluxDB accepted.
#[derive(Clone, Debug)]
struct Posted {
    events: usize,
    body: Vec<u8>,
}

/// What a run of the emulated Vector did.
struct Outcome {
    /// Every event, in order (the frames of stdout).
    events: Vec<Vec<u8>>,
    /// Every request accepted.
    posted: Vec<Posted>,
    /// Requests given up (a status Vector does not retry, or retries exhausted).
    dropped: Vec<String>,
    /// flowlens's exit status.
    status: ExitStatus,
}

/// The emulated Vector, running on its own thread.
struct Vector {
    pid: u32,
    /// After every accepted request: the number of `flowlens:internal` lines (gathers) sent.
    progress: mpsc::Receiver<usize>,
    /// The most gathers `progress` has told of so far.
    seen: std::cell::Cell<usize>,
    thread: Option<JoinHandle<Outcome>>,
}

/// Splits `buf` as CharacterDelimitedDecoder does; `eof` takes what is left as a last frame.
fn frames(buf: &mut Vec<u8>, p: &Pipeline, eof: bool, out: &mut Vec<Vec<u8>>) {
    let max = p.max_length.unwrap_or(usize::MAX);
    while let Some(i) = buf.iter().position(|&b| b == p.source_delimiter) {
        let frame: Vec<u8> = buf.drain(..=i).take(i).collect();
        if frame.len() <= max {
            out.push(frame);
        } else if p.truncate_oversized {
            out.push(frame[..max].to_vec());
        }
    }
    if eof && !buf.is_empty() {
        let frame = std::mem::take(buf);
        if frame.len() <= max {
            out.push(frame);
        } else if p.truncate_oversized {
            out.push(frame[..max].to_vec());
        }
    }
}

/// Reads a pipe of the child into events on `tx`, as the exec source's reader task does.
fn reader(mut pipe: impl Read + Send + 'static, p: Pipeline, tx: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = pipe.read(&mut chunk).unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            frames(&mut buf, &p, n == 0, &mut out);
            for event in out {
                if tx.send(event).is_err() {
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    });
}

impl Vector {
    /// Starts the source's command (the built binary for `/usr/bin/flowlens`, with
    /// `--config <flowlens_config>` first) and the sink towards `influxd_authority`.
    fn start(p: &Pipeline, flowlens_config: &Path, influxd_authority: &str) -> Vector {
        assert_eq!(
            p.command[0], "/usr/bin/flowlens",
            "the .deb's binary; this test runs the built one in its place"
        );
        let p = Pipeline {
            authority: influxd_authority.to_string(),
            ..p.clone()
        };
        if let Some(uri) = &p.healthcheck {
            let rest = uri
                .strip_prefix("http://")
                .expect("an http healthcheck uri");
            let path = rest.find('/').map_or("/", |i| &rest[i..]);
            let reply = http(influxd_authority, "HEAD", path, b"", p.request_timeout).unwrap();
            assert_eq!(
                reply.status, 200,
                "the http sink's healthcheck (HEAD {path}) wants 200"
            );
        }
        let mut child = Command::new(flowlens_bin())
            .arg("--config")
            .arg(flowlens_config)
            .args(&p.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if p.include_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let pid = child.id();
        let (events_tx, events) = mpsc::channel();
        reader(child.stdout.take().unwrap(), p.clone(), events_tx.clone());
        if let Some(stderr) = child.stderr.take() {
            reader(stderr, p.clone(), events_tx.clone());
        }
        drop(events_tx);
        let (progress_tx, progress) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut outcome = Outcome {
                events: Vec::new(),
                posted: Vec::new(),
                dropped: Vec::new(),
                status: ExitStatus::default(),
            };
            let mut gathers = 0;
            let mut flush = |batch: &mut Vec<Vec<u8>>, outcome: &mut Outcome| {
                if batch.is_empty() {
                    return;
                }
                gathers += batch
                    .iter()
                    .filter(|e| e.starts_with(b"flowlens:internal"))
                    .count();
                let mut body = Vec::new();
                for event in batch.iter() {
                    body.extend_from_slice(event);
                    body.push(p.sink_delimiter);
                }
                match send(&p, &body) {
                    Ok(()) => outcome.posted.push(Posted {
                        events: batch.len(),
                        body,
                    }),
                    Err(why) => outcome.dropped.push(why),
                }
                batch.clear();
                let _ = progress_tx.send(gathers);
            };
            // The partitioned batcher: one partition (a static URI, no templated headers).
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut size = 0;
            let mut deadline: Option<Instant> = None;
            loop {
                let next = match deadline {
                    Some(d) => events.recv_timeout(d.saturating_duration_since(Instant::now())),
                    None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok(event) => {
                        outcome.events.push(event.clone());
                        // HttpBatchSizer counts a text event's size in memory (ByteSizeOf),
                        // more than its line: the emulation counts the line and its delimiter.
                        let item = event.len() + 1;
                        if !batch.is_empty() && size + item > p.max_bytes {
                            flush(&mut batch, &mut outcome);
                            size = 0;
                            deadline = Some(Instant::now() + p.timeout);
                        }
                        if batch.is_empty() && deadline.is_none() {
                            deadline = Some(Instant::now() + p.timeout);
                        }
                        batch.push(event);
                        size += item;
                        if batch.len() >= p.max_events || size >= p.max_bytes {
                            flush(&mut batch, &mut outcome);
                            size = 0;
                            deadline = None;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        flush(&mut batch, &mut outcome);
                        size = 0;
                        deadline = None;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        // The stream ended (stdout closed): what is batched goes out.
                        flush(&mut batch, &mut outcome);
                        break;
                    }
                }
            }
            outcome.status = child.wait().unwrap();
            outcome
        });
        Vector {
            pid,
            progress,
            seen: std::cell::Cell::new(0),
            thread: Some(thread),
        }
    }

    /// Waits until `gathers` gathers went to InfluxDB (at most `within`).
    fn wait_gathers(&self, gathers: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.seen.get() < gathers {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.progress.recv_timeout(left) {
                Ok(n) => self.seen.set(self.seen.get().max(n)),
                Err(e) => panic!("{gathers} gathers through Vector within {within:?}: {e}"),
            }
        }
    }

    /// Waits until `more` gathers went to InfluxDB after those told of so far.
    fn wait_more_gathers(&self, more: usize, within: Duration) {
        while let Ok(n) = self.progress.try_recv() {
            self.seen.set(self.seen.get().max(n));
        }
        self.wait_gathers(self.seen.get() + more, within);
    }

    /// Vector's shutdown: one SIGTERM to the child, then reading until its pipes close.
    fn stop(mut self) -> Outcome {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let outcome = self.thread.take().unwrap().join().unwrap();
        // flowlens's lines (stderr's, when included, carry Telegraf's level prefixes).
        let mut checker = monotonic::Checker::new();
        for event in &outcome.events {
            let line = String::from_utf8_lossy(event);
            if !["E! ", "W! ", "I! ", "D! "]
                .iter()
                .any(|p| line.starts_with(p))
            {
                checker.feed_line(&line);
            }
        }
        checker.finish();
        outcome
    }
}

impl Drop for Vector {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // A failed test: do not leave flowlens behind.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
    }
}

/// One request with the sink's retry logic (RetryStrategy::Default, FibonacciRetryPolicy;
/// backoffs at their upper bound, without jitter).
fn send(p: &Pipeline, body: &[u8]) -> Result<(), String> {
    let (mut previous, mut current) = (Duration::ZERO, p.retry_initial_backoff);
    let mut attempts_left = p.retry_attempts;
    loop {
        let why = match http(&p.authority, &p.method, &p.path, body, p.request_timeout) {
            Ok(reply) if (200..300).contains(&reply.status) => return Ok(()),
            Ok(reply)
                if matches!(reply.status, 408 | 429)
                    || (500..600).contains(&reply.status) && reply.status != 501 =>
            {
                format!("{} {}", reply.status, reply.body)
            }
            Ok(reply) => {
                return Err(format!(
                    "{} {} {}: {} (not retried)",
                    p.method, p.path, reply.status, reply.body
                ))
            }
            Err(e) => e.to_string(),
        };
        if attempts_left == 0 {
            return Err(format!(
                "{} {}: {why} (retries exhausted)",
                p.method, p.path
            ));
        }
        attempts_left -= 1;
        let next = (previous + current).min(p.retry_max_duration);
        (previous, current) = (current, next);
        std::thread::sleep(current);
    }
}

// ------------------------------------------------------------------------------------------

fn shipped() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../vector.d/flowlens.toml"))
        .unwrap()
}

/// The timestamps (ms) of the gathers in `text`: those of its `flowlens:internal` lines.
fn gather_ms(text: &str) -> Vec<i64> {
    text.lines()
        .filter(|l| l.starts_with("flowlens:internal"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap() / 1_000_000)
        .collect()
}

#[test]
fn the_shipped_config_reads_as_a_byte_for_byte_path() {
    let p = Pipeline::parse(&shipped());
    assert_eq!(p.command.last().map(String::as_str), Some("stream"));
    assert!(
        !p.include_stderr,
        "flowlens's logs must stay out of the events"
    );
    assert_eq!((p.source_delimiter, p.sink_delimiter), (b'\n', b'\n'));
    assert_eq!(p.method, "POST");
    assert!(p.path.starts_with("/write?"), "{}", p.path);
    assert!(p.path.contains("precision=ns"), "{}", p.path);
    assert_eq!(p.database(), "ntopng");
    // A gather is sent within the batch timeout, and never above InfluxDB 1.x's body limit
    // (25 MB by default).
    assert!(p.timeout <= Duration::from_secs(10), "{:?}", p.timeout);
    assert!(p.max_bytes <= 25_000_000, "{}", p.max_bytes);
    assert!(p.retry_attempts > 0, "retries");
    assert!(
        p.healthcheck.is_none(),
        "InfluxDB 1.x's /ping answers 204, the check wants 200"
    );
}

#[test]
fn the_shipped_vector_config_keeps_ntopng_queries_and_dashboards_working() {
    if !require_root("the_shipped_vector_config_keeps_ntopng_queries_and_dashboards_working") {
        return;
    }
    let p = Pipeline::parse(&shipped());
    let server = Influxd::start();
    let through_vector = p.database();
    let direct = "direct";
    server.create_database(&through_vector);
    server.create_database(direct);
    let dir = TempDir::new("vector");
    let flowlens_config = dir.join("flowlens.toml");
    std::fs::write(&flowlens_config, "interval_secs = 1\n").unwrap();

    let mut shop = Shop::new("flvc", 95);
    let vector = Vector::start(&p, &flowlens_config, &format!("127.0.0.1:{}", server.port));
    vector.wait_gathers(1, session::HANG);
    // Containers start after flowlens: their flows are seen opening. Six gathers after they
    // started, however long starting them took on a loaded machine.
    shop.start_clients();
    let web = shop.tag("web");
    vector.wait_more_gathers(6, session::HANG);
    let outcome = vector.stop();
    drop(shop);
    assert!(
        outcome.status.success(),
        "SIGTERM ends flowlens stream with exit 0: {}",
        outcome.status
    );
    assert!(
        outcome.dropped.is_empty(),
        "InfluxDB refused batches:\n{}",
        outcome.dropped.join("\n")
    );

    // The lines as flowlens wrote them, captured by the emulated source.
    let mut captured = Vec::new();
    for event in &outcome.events {
        captured.extend_from_slice(event);
        captured.push(b'\n');
    }
    let text = String::from_utf8(captured.clone()).unwrap();
    flowlens_core::lineproto::validate(&text).unwrap();
    assert!(
        text.contains(&format!("container={web}")),
        "no series of web:\n{text}"
    );
    // Byte for byte: the requests' bodies are the output.
    let sent: Vec<u8> = outcome.posted.iter().flat_map(|r| r.body.clone()).collect();
    assert!(
        sent == captured,
        "the bodies POSTed are not flowlens's output"
    );
    let stamps = gather_ms(&text);
    eprintln!(
        "{} lines of {} gathers in {} requests (events per request: {:?})",
        outcome.events.len(),
        stamps.len(),
        outcome.posted.len(),
        outcome.posted.iter().map(|r| r.events).collect::<Vec<_>>()
    );

    // The curl path: the same lines in one POST /write.
    let reply = server.write(direct, &captured);
    assert_eq!(reply.status, 204, "{}", reply.body);

    // The seed's two queries, through the influx shell as the seed shows them.
    let seed = [
        "show measurements with measurement =~ /^container*/".to_string(),
        format!(
            "select * from \"container:num_flows\" where \"container\" = '{web}' order by time desc limit 10"
        ),
    ];
    for query in &seed {
        let via = server.influx(&through_vector, query);
        let curl = server.influx(direct, query);
        assert_eq!(via, curl, "{query}: Vector's path differs from curl's");
        eprintln!("> {query}\n{via}");
    }
    let shown = server.influx(&through_vector, &seed[0]);
    for m in ["container:num_flows", "container:rtt", "container:traffic"] {
        assert!(shown.lines().any(|l| l.trim() == m), "{m}:\n{shown}");
    }
    let rows = server.influx(&through_vector, &seed[1]);
    let mut lines = rows.lines();
    assert_eq!(lines.next(), Some("name: container:num_flows"), "{rows}");
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[..4],
        ["time", "as_client", "as_server", "container"],
        "{rows}"
    );
    let data = rows
        .lines()
        .skip(3)
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(data >= 5, "a row per gather since web started:\n{rows}");

    // Everything stored is the same.
    let influx = |database: &str| Influx {
        address: format!("127.0.0.1:{}", server.port),
        database: database.to_string(),
    };
    let (via, curl) = (influx(&through_vector), influx(direct));
    for query in ["show series", "select * from /.*/"] {
        let a = via.query(query).unwrap();
        assert!(!a.is_empty(), "{query}");
        assert!(
            a == curl.query(query).unwrap(),
            "{query}: the databases differ"
        );
    }

    // Every dashboard query, on the data that went through Vector, returns data where there is
    // some and the same as on the curl path.
    let range = TimeRange {
        from_ms: stamps[0] - 1000,
        to_ms: stamps.last().unwrap() + 1000,
        interval: "1s".into(),
    };
    let mut differ = Vec::new();
    let Checked {
        checked,
        failures,
        without_data,
    } = check_every_query(
        &dashboards(),
        &via,
        &range,
        |query, series: &[Series]| match curl.query(query) {
            Ok(other) if other == series => {}
            Ok(_) => differ.push(format!("differs: {query}")),
            Err(e) => differ.push(format!("{query}: {e}")),
        },
    );
    eprintln!(
        "{checked} dashboard queries returned data; checked for errors only (no data): {without_data:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing dashboard queries:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert!(
        !without_data
            .iter()
            .any(|m| m.starts_with("container:") || m.starts_with("pod:")),
        "container and pod panels had data to show: {without_data:?}"
    );
}
