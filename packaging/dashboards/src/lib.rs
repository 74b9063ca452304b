//! The Grafana dashboards of packaging/grafana/dashboards/ run outside Grafana: their JSON read,
//! their template variables resolved and expanded the way Grafana expands them, their InfluxQL
//! sent to a real InfluxDB 1.x `/query`. The integration test (tests/packaging.rs) checks every
//! query with it; the renderer (`flowlens-render-dashboards`) draws the README's pictures with it,
//! so both run exactly the queries a user's Grafana runs.

use serde::Deserialize;
use std::{
    fmt,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

/// A dashboard file, reduced to what running its queries needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Dashboard {
    /// Stable identifier (provisioning keeps it across imports).
    pub uid: String,
    /// Title shown in Grafana.
    pub title: String,
    /// Template variables, in the order Grafana resolves them.
    pub templating: Templating,
    /// Panels, in layout order.
    pub panels: Vec<Panel>,
}

/// The `templating` object of a dashboard.
#[derive(Debug, Clone, Deserialize)]
pub struct Templating {
    /// The variables.
    pub list: Vec<Variable>,
}

/// One template variable.
#[derive(Debug, Clone, Deserialize)]
pub struct Variable {
    /// Name used in queries as `$name`.
    pub name: String,
    /// `datasource` or `query`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `query` variables: the InfluxQL (`SHOW TAG VALUES ...`); for `datasource`: the plugin id.
    #[serde(default)]
    pub query: serde_json::Value,
    /// Whether "All" can be selected.
    #[serde(default, rename = "includeAll")]
    pub include_all: bool,
    /// What "All" expands to (a regex).
    #[serde(default, rename = "allValue")]
    pub all_value: Option<String>,
}

/// One panel.
#[derive(Debug, Clone, Deserialize)]
pub struct Panel {
    /// Panel id, unique in its dashboard.
    pub id: u32,
    /// Panel type (`timeseries`, `bargauge`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Title.
    pub title: String,
    /// Position on Grafana's 24-column grid.
    #[serde(rename = "gridPos")]
    pub grid_pos: GridPos,
    /// The queries.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Field config; only the unit and stacking are read.
    #[serde(default, rename = "fieldConfig")]
    pub field_config: serde_json::Value,
}

impl Panel {
    /// The panel's unit (`Bps`, `ms`, `short`...).
    pub fn unit(&self) -> &str {
        self.field_config["defaults"]["unit"]
            .as_str()
            .unwrap_or("short")
    }

    /// Whether the series are stacked.
    pub fn stacked(&self) -> bool {
        self.field_config["defaults"]["custom"]["stacking"]["mode"].as_str() == Some("normal")
    }
}

/// Grafana grid position.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct GridPos {
    /// Column (0..24).
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Width in columns.
    pub w: u32,
    /// Height in rows.
    pub h: u32,
}

/// One InfluxQL query of a panel.
#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    /// `A`, `B`...
    #[serde(rename = "refId")]
    pub ref_id: String,
    /// The raw InfluxQL with `$timeFilter`, `$__interval` and `$variable`s.
    pub query: String,
    /// Series name pattern (`$tag_ifname`).
    #[serde(default)]
    pub alias: String,
    /// Raw query mode (every flowlens dashboard uses it).
    #[serde(default, rename = "rawQuery")]
    pub raw_query: bool,
}

/// Errors of this crate.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or parsed.
    File(PathBuf, String),
    /// The HTTP exchange with InfluxDB failed.
    Http(String),
    /// InfluxDB answered with an error (an InfluxQL error, for one).
    Query {
        /// The statement sent.
        query: String,
        /// InfluxDB's message.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File(path, e) => write!(f, "{}: {e}", path.display()),
            Error::Http(e) => write!(f, "InfluxDB HTTP: {e}"),
            Error::Query { query, message } => write!(f, "InfluxDB: {message}\n  query: {query}"),
        }
    }
}

impl std::error::Error for Error {}

/// packaging/grafana/dashboards/ of this repository.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards")
}

/// Reads one dashboard file.
pub fn load(path: &Path) -> Result<Dashboard, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::File(path.to_path_buf(), e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::File(path.to_path_buf(), e.to_string()))
}

/// Every `*.json` of `dir`, sorted by file name.
pub fn load_all(dir: &Path) -> Result<Vec<(PathBuf, Dashboard)>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::File(dir.to_path_buf(), e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| load(&p).map(|d| (p, d)))
        .collect()
}

/// One series of a query result.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Series {
    /// Measurement name.
    #[serde(default)]
    pub name: String,
    /// GROUP BY tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Column names; the first is `time` for SELECTs.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows.
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

impl Series {
    /// Whether some row has a non-null value in a column other than `time`.
    pub fn has_data(&self) -> bool {
        let skip = usize::from(self.columns.first().is_some_and(|c| c == "time"));
        self.values
            .iter()
            .any(|row| row.iter().skip(skip).any(|v| !v.is_null()))
    }

    /// The series name Grafana shows: the alias with `$tag_<key>` replaced, or
    /// `<measurement>.<column>` (plus tags) without an alias.
    pub fn label(&self, alias: &str, column: &str) -> String {
        if alias.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            return if tags.is_empty() {
                format!("{}.{column}", self.name)
            } else {
                format!("{}.{column} {{{}}}", self.name, tags.join(", "))
            };
        }
        let mut out = String::new();
        let mut rest = alias;
        while let Some(i) = rest.find("$tag_") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 5..];
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push_str(self.tags.get(&after[..end]).map_or("", String::as_str));
            rest = &after[end..];
        }
        out.push_str(rest);
        let words: Vec<&str> = out.split_whitespace().collect();
        words.join(" ")
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

/// An InfluxDB 1.x server and database, queried over HTTP `/query`.
#[derive(Debug, Clone)]
pub struct Influx {
    /// `host:port` of the HTTP API.
    pub address: String,
    /// The database (`ntopng`).
    pub database: String,
}

impl Influx {
    /// Runs one InfluxQL statement; time values come back as epoch milliseconds.
    pub fn query(&self, query: &str) -> Result<Vec<Series>, Error> {
        let path = format!(
            "/query?db={}&epoch=ms&q={}",
            percent_encode(&self.database),
            percent_encode(query)
        );
        let mut stream = TcpStream::connect(&self.address)
            .map_err(|e| Error::Http(format!("connect {}: {e}", self.address)))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| Error::Http(e.to_string()))?;
        // HTTP/1.0: the server answers with a plain body ended by closing the connection.
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .map_err(|e| Error::Http(e.to_string()))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| Error::Http(e.to_string()))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| Error::Http(format!("no HTTP header in {text:?}")))?;
        let status = head.split(' ').nth(1).unwrap_or("");
        let reply: Reply = serde_json::from_str(body).map_err(|e| {
            Error::Http(format!(
                "status {status}, body not InfluxDB JSON ({e}): {body}"
            ))
        })?;
        let error = reply
            .error
            .or_else(|| reply.results.iter().find_map(|r| r.error.clone()));
        if let Some(message) = error {
            return Err(Error::Query {
                query: query.to_string(),
                message,
            });
        }
        if status != "200" {
            return Err(Error::Http(format!("status {status}: {body}")));
        }
        Ok(reply.results.into_iter().flat_map(|r| r.series).collect())
    }

    /// Whether `measurement` has at least one point in the time range.
    pub fn has_points(&self, measurement: &str, range: &TimeRange) -> Result<bool, Error> {
        let series = self.query(&format!(
            "SELECT * FROM \"{}\" WHERE {} LIMIT 1",
            measurement.replace('"', "\\\""),
            range.filter()
        ))?;
        Ok(series.iter().any(Series::has_data))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The dashboard's time range and `$__interval`, as Grafana would send them.
#[derive(Debug, Clone)]
pub struct TimeRange {
    /// Start, epoch milliseconds.
    pub from_ms: i64,
    /// End, epoch milliseconds.
    pub to_ms: i64,
    /// `$__interval`, an InfluxQL duration (`1s`, `10s`).
    pub interval: String,
}

impl TimeRange {
    /// What Grafana writes for `$timeFilter`.
    pub fn filter(&self) -> String {
        format!("time >= {}ms and time <= {}ms", self.from_ms, self.to_ms)
    }
}

/// Which value each template variable takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// "All" (the variable's `allValue`, `.*`): the dashboard as it opens.
    All,
    /// The first value the variable's query returns, alone (the `allValue` when it returns
    /// none): the dashboard narrowed to one interface, pod or container.
    First,
}

/// A template variable resolved against the database.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Variable name.
    pub name: String,
    /// Its query with the variables before it expanded (empty for `datasource`).
    pub query: String,
    /// The values the query returned.
    pub values: Vec<String>,
    /// What `$name` expands to in queries (a regex for `=~ /^$name$/`).
    pub value: String,
}

/// Resolves the dashboard's `query` variables in order, each query expanded with the variables
/// before it, the way Grafana does at load time.
pub fn resolve(
    dashboard: &Dashboard,
    influx: &Influx,
    range: &TimeRange,
    selection: Selection,
) -> Result<Vec<Resolved>, Error> {
    let mut resolved: Vec<Resolved> = Vec::new();
    for var in &dashboard.templating.list {
        if var.kind != "query" {
            continue;
        }
        let raw = var.query.as_str().unwrap_or_default();
        let query = expand(raw, &resolved, range);
        let mut values: Vec<String> = influx
            .query(&query)?
            .iter()
            .flat_map(|s| {
                let col = s.columns.iter().position(|c| c == "value").unwrap_or(1);
                s.values
                    .iter()
                    .filter_map(move |row| row.get(col).and_then(|v| v.as_str()).map(String::from))
            })
            .collect();
        values.sort();
        values.dedup();
        let all = var.all_value.clone().unwrap_or_else(|| {
            format!(
                "({})",
                values
                    .iter()
                    .map(|v| regex_escape(v))
                    .collect::<Vec<_>>()
                    .join("|")
            )
        });
        let value = match (selection, values.first()) {
            (Selection::First, Some(first)) => regex_escape(first),
            _ if var.include_all => all,
            (_, Some(first)) => regex_escape(first),
            (_, None) => String::new(),
        };
        resolved.push(Resolved {
            name: var.name.clone(),
            query,
            values,
            value,
        });
    }
    Ok(resolved)
}

/// Escapes regex metacharacters and `/` (the InfluxQL regex delimiter), as Grafana does for a
/// value used in `=~ /^$var$/`.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Expands `$timeFilter`, `$__interval` and the variables (`$name`, `${name}`, `[[name]]`) in
/// a query. Unknown `$names` are left as they are (InfluxDB will then report an error).
pub fn expand(query: &str, vars: &[Resolved], range: &TimeRange) -> String {
    let lookup = |name: &str| -> Option<String> {
        match name {
            "timeFilter" => Some(range.filter()),
            "__interval" => Some(range.interval.clone()),
            _ => vars
                .iter()
                .find(|v| v.name == name)
                .map(|v| v.value.clone()),
        }
    };
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let next = rest.find(['$', '[']);
        let Some(i) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 3),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) => (&inner[..end], end + 4),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            ("", 0)
        };
        match (len, lookup(name)) {
            (len, Some(value)) if len > 0 => {
                out.push_str(&value);
                rest = &tail[len..];
            }
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out
}

/// The measurements a query reads (`FROM "name"`, subqueries included), in order.
pub fn measurements(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let upper = query.to_ascii_uppercase();
    let mut from = 0;
    while let Some(i) = upper[from..].find("FROM \"") {
        let start = from + i + 6;
        let Some(len) = query[start..].find('"') else {
            break;
        };
        let name = query[start..start + len].to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        from = start + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> TimeRange {
        TimeRange {
            from_ms: 1000,
            to_ms: 2000,
            interval: "1s".into(),
        }
    }

    fn var(name: &str, value: &str) -> Resolved {
        Resolved {
            name: name.into(),
            query: String::new(),
            values: vec![],
            value: value.into(),
        }
    }

    #[test]
    fn expands_grafana_placeholders() {
        let vars = [var("pod", "web\\.0"), var("pods", "x")];
        let q = "SELECT mean(\"a\") FROM \"pod:rtt\" WHERE $timeFilter AND \"pod\" =~ /^$pod$/ \
                 AND \"p\" =~ /^${pods}$/ AND \"q\" = '[[pod]]' GROUP BY time($__interval), $unknown";
        assert_eq!(
            expand(q, &vars, &range()),
            "SELECT mean(\"a\") FROM \"pod:rtt\" WHERE time >= 1000ms and time <= 2000ms AND \
             \"pod\" =~ /^web\\.0$/ AND \"p\" =~ /^x$/ AND \"q\" = 'web\\.0' GROUP BY time(1s), $unknown"
        );
    }

    #[test]
    fn finds_every_measurement_of_a_query() {
        assert_eq!(
            measurements(
                "SELECT sum(\"x\") FROM (SELECT last(\"b\") FROM \"host:ndpi\" WHERE a) from \"iface:flows\""
            ),
            vec!["host:ndpi", "iface:flows"]
        );
    }

    #[test]
    fn escapes_values_for_regexes() {
        assert_eq!(regex_escape("10.0.0.1"), "10\\.0\\.0\\.1");
        assert_eq!(regex_escape("a/b(c)"), "a\\/b\\(c\\)");
    }

    #[test]
    fn labels_series_from_aliases() {
        let mut s = Series {
            name: "iface:traffic".into(),
            ..Series::default()
        };
        s.tags.insert("ifname".into(), "eth0".into());
        s.tags.insert("host".into(), "".into());
        assert_eq!(s.label("$tag_ifname $tag_host", "bytes"), "eth0");
        assert_eq!(
            s.label("", "bytes"),
            "iface:traffic.bytes {host: , ifname: eth0}"
        );
    }

    #[test]
    fn percent_encodes_queries() {
        assert_eq!(percent_encode("a b/\"c\""), "a%20b%2F%22c%22");
    }
}
