//! The Grafana dashboards' every query (packaging/grafana/dashboards, run by the
//! `flowlens-dashboards` crate) against a real InfluxDB 1.x holding flowlens output.

use flowlens_dashboards::{
    expand, load_all, measurements, resolve, Dashboard, Influx, Selection, Series, TimeRange,
};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// The dashboards the package ships, in file order.
pub fn dashboards() -> Vec<(PathBuf, Dashboard)> {
    load_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/dashboards"))
        .unwrap()
}

/// What [`check_every_query`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Queries that read a measurement with data and returned data.
    pub checked: usize,
    /// One line per failure.
    pub failures: Vec<String>,
    /// Measurements read by queries that were checked for errors only (no data in the range).
    pub without_data: BTreeSet<String>,
}

/// Every query of every dashboard, with its variables resolved from the data (all values, then
/// the first value of each): an InfluxQL error fails, and so does an empty result where a
/// measurement the query reads has data. Panels of measurements without data are checked for
/// errors only, and listed. `each` sees every query run (variables' and panels') with its
/// result.
pub fn check_every_query(
    dashboards: &[(PathBuf, Dashboard)],
    influx: &Influx,
    range: &TimeRange,
    mut each: impl FnMut(&str, &[Series]),
) -> Checked {
    let mut out = Checked::default();
    for (path, dashboard) in dashboards {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for selection in [Selection::All, Selection::First] {
            let vars = match resolve(dashboard, influx, range, selection) {
                Ok(vars) => vars,
                Err(e) => {
                    out.failures
                        .push(format!("{file}: template variables: {e}"));
                    continue;
                }
            };
            for var in &vars {
                if !var.query.is_empty() {
                    if let Ok(series) = influx.query(&var.query) {
                        each(&var.query, &series);
                    }
                }
                let from = measurements(&var.query);
                let has = from
                    .iter()
                    .any(|m| influx.has_points(m, range).unwrap_or(false));
                if has && var.values.is_empty() {
                    out.failures.push(format!(
                        "{file}: variable ${} has no values, but {from:?} has data:\n  {}",
                        var.name, var.query
                    ));
                }
            }
            for panel in &dashboard.panels {
                // Narrowed to one pod or container, a field can be absent for good reason (a
                // server-only container has no RTT as client): then the panel as a whole must
                // show data. With everything selected, every query must.
                let mut panel_failures = Vec::new();
                let mut panel_has_data = false;
                for target in &panel.targets {
                    let query = expand(&target.query, &vars, range);
                    let from = measurements(&query);
                    let with_data: Vec<&String> = from
                        .iter()
                        .filter(|m| influx.has_points(m, range).unwrap_or(false))
                        .collect();
                    match influx.query(&query) {
                        Err(e) => out.failures.push(format!(
                            "{file}: {} ({}) {selection:?}: {e}",
                            panel.title, target.ref_id
                        )),
                        Ok(series) if with_data.is_empty() => {
                            each(&query, &series);
                            out.without_data.extend(from.iter().cloned());
                        }
                        Ok(series) => {
                            each(&query, &series);
                            out.checked += 1;
                            if series.iter().any(|s| s.has_data()) {
                                panel_has_data = true;
                            } else {
                                panel_failures.push(format!(
                                    "{file}: {} ({}) {selection:?}: empty result, but {with_data:?} has data:\n  {query}",
                                    panel.title, target.ref_id
                                ));
                            }
                        }
                    }
                }
                if selection == Selection::All || !panel_has_data {
                    out.failures.extend(panel_failures);
                }
            }
        }
    }
    out
}
