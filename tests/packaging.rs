//! Packaging and integrations (packaging/): the Grafana dashboards' every query against a real
//! InfluxDB 1.x loaded with real flowlens output, the .deb built, installed, run and purged on
//! this machine, and the Kubernetes manifests validated and kept equal to telegraf.d/.

use flowlens_dashboards::{measurements, Influx, TimeRange};
use flowlens_tests::{
    dashboards::{check_every_query, dashboards, Checked},
    standins::Shop,
    *,
};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// docs/metrics.md: every measurement, and whether it is a counter, i.e. each of its fields is
/// (rates need `non_negative_derivative`, totals over a range `spread`).
fn schema() -> Vec<(String, bool)> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut out: Vec<(String, bool)> = Vec::new();
    for line in doc.lines() {
        if let Some(m) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            out.push((m.to_string(), true));
        } else if line.starts_with("| `") && line.contains(" | field | ") {
            // | key | kind | type | ntopng_compat | unit | counter / gauge | meaning |
            let counter = line.split('|').nth(6).unwrap().trim() == "counter";
            out.last_mut().expect("a table under a measurement").1 &= counter;
        }
    }
    assert!(out.len() >= 20, "docs/metrics.md: {out:?}");
    out
}

/// What flowlens writes today on any host with eBPF; the scenario must put data in each.
const WRITTEN_TODAY: &[&str] = &[
    "iface:traffic",
    "iface:traffic_rxtx",
    "iface:packets",
    "iface:flows",
    "iface:new_flows",
    "host:traffic",
    "host:active_flows",
    "host:total_flows",
    "host:ndpi",
    "flowlens:internal",
];

#[test]
fn dashboards_cover_the_schema_with_provisionable_influxql() {
    let all = dashboards();
    let schema = schema();
    let titles: Vec<&str> = all.iter().map(|(_, d)| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "flowlens / Containers",
            "flowlens / Health",
            "flowlens / Host network",
            "flowlens / Pods"
        ]
    );
    let mut used = BTreeSet::new();
    let mut uids = BTreeSet::new();
    for (path, dashboard) in &all {
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.display();
        assert!(uids.insert(dashboard.uid.clone()), "{name}: duplicate uid");
        // Provisioning-ready: no import-time inputs, no fixed id, the datasource a variable.
        assert!(raw.get("__inputs").is_none(), "{name}");
        assert!(raw["id"].is_null(), "{name}: id must be null");
        let vars = &dashboard.templating.list;
        assert!(
            vars.iter()
                .any(|v| v.name == "datasource" && v.kind == "datasource" && v.query == "influxdb"),
            "{name}: an InfluxDB datasource variable named `datasource`"
        );
        for var in vars.iter().filter(|v| v.kind == "query") {
            let q = var.query.as_str().unwrap();
            assert!(q.starts_with("SHOW TAG VALUES FROM "), "{name}: {q}");
            assert_eq!(var.all_value.as_deref(), Some(".*"), "{name}: {}", var.name);
        }
        // A node variable, flowlens's `node` tag, first after the datasource; every other
        // variable and every query filtered by it, and every query grouped by it (two nodes'
        // `host=127.0.0.1` or `container=other` are two series).
        let node = &vars[1];
        assert_eq!(node.name, "node", "{name}");
        assert!(
            node.query
                .as_str()
                .unwrap()
                .ends_with(" WITH KEY = \"node\""),
            "{name}: {:?}",
            node.query
        );
        const BY_NODE: &str = "\"node\" =~ /^$node$/";
        for var in &vars[2..] {
            let q = var.query.as_str().unwrap();
            assert!(q.contains(BY_NODE), "{name}: ${}: {q}", var.name);
        }
        let defined: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        for (i, panel) in raw["panels"].as_array().unwrap().iter().enumerate() {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}");
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{name}");
                assert_eq!(target["rawQuery"], true, "{name}");
            }
            let panel = &dashboard.panels[i];
            assert!(!panel.targets.is_empty(), "{name}: {}", panel.title);
            for target in &panel.targets {
                let q = &target.query;
                for var in q.split('$').skip(1) {
                    let var: String = var
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // An empty name is the regex anchor of `/^$var$/`.
                    assert!(
                        var.is_empty()
                            || ["timeFilter", "__interval"].contains(&var.as_str())
                            || defined.contains(&var.as_str()),
                        "{name}: {}: ${var} is not a variable of the dashboard",
                        panel.title
                    );
                }
                assert!(q.contains("$timeFilter"), "{name}: {q}");
                // Each source read (a measurement read twice, by two subqueries, is two).
                assert_eq!(
                    q.matches(BY_NODE).count(),
                    q.to_ascii_uppercase().matches("FROM \"").count(),
                    "{name}: {}: filter each measurement read by node: {q}",
                    panel.title
                );
                assert!(
                    q.contains("GROUP BY time($__interval), \"node\"")
                        || q.contains("GROUP BY \"node\""),
                    "{name}: {}: group by node: {q}",
                    panel.title
                );
                if measurements(q).iter().any(|m| m.starts_with("host:")) {
                    assert!(
                        q.contains("\"node\", \"host\", \"netns\""),
                        "{name}: {}: a local address is one in its network namespace: {q}",
                        panel.title
                    );
                }
                for m in measurements(q) {
                    let counter = schema
                        .iter()
                        .find(|(s, _)| *s == m)
                        .unwrap_or_else(|| panic!("{name}: {m} is not in docs/metrics.md"))
                        .1;
                    let counter_fields = m != "flowlens:internal"
                        || ["events_", "flows_evicted", "series_dropped"]
                            .iter()
                            .any(|f| q.contains(f));
                    if counter && counter_fields {
                        assert!(
                            q.contains("non_negative_derivative(") || q.contains("spread("),
                            "{name}: {m} is a counter: rate with non_negative_derivative:\n{q}"
                        );
                    }
                    used.insert(m);
                }
            }
        }
    }
    let missing: Vec<&str> = schema
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

// ------------------------------------------------------------------------------------------
// The scenario (tests/support/standins.rs): two pods' network namespaces joined by a veth pair,
// stand-in containers (cgroup directories and containerd bundles as a containerd node has them)
// running real TCP traffic, and flowlens gathering it in Telegraf mode into a real InfluxDB.

/// The timestamp (ms) of a batch: the last token of its `flowlens:internal` line.
fn batch_ms(batch: &str) -> i64 {
    let line = batch
        .lines()
        .find(|l| l.starts_with("flowlens:internal"))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse::<i64>().unwrap() / 1_000_000
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every query of every dashboard, with its variables resolved from the data (all values, then
/// the first value of each), against several gathers of real flowlens output: an InfluxQL error
/// fails, and so does an empty result where a measurement the query reads has data. Panels of
/// measurements without data (container:/pod: until flowlens writes them) are checked for
/// errors only, and listed.
///
/// With `FLOWLENS_RENDER_DASHBOARDS=<dir>` (packaging/grafana/render.sh), the test then renders
/// the README's pictures from the same database; `FLOWLENS_DASHBOARD_GATHERS` and
/// `FLOWLENS_DASHBOARD_GATHER_MS` set how many gathers and how far apart (default 6, 1000 ms).
#[test]
fn every_dashboard_query_returns_data_from_real_flowlens_output() {
    if !require_root("every_dashboard_query_returns_data_from_real_flowlens_output") {
        return;
    }
    let gathers = env_number("FLOWLENS_DASHBOARD_GATHERS", 6).max(3);
    let gather_ms = env_number("FLOWLENS_DASHBOARD_GATHER_MS", 1000).max(1000);
    let server = Influxd::start();
    server.create_database("ntopng");

    let mut shop = Shop::new("flpk", 93);

    let mut flowlens = session::Session::start("");
    let first = flowlens.gather();
    assert!(
        first.contains("events_received="),
        "the eBPF collector did not start:\n{first}"
    );
    if in_ci() {
        assert!(
            first.contains("probes_failed=0i"),
            "CI loads every probe:\n{first}"
        );
    }
    // Containers start after flowlens: their flows are seen opening.
    shop.start_clients();

    let mut stamps = vec![batch_ms(&first)];
    assert_eq!(server.write("ntopng", first.as_bytes()).status, 204);
    for _ in 1..gathers {
        let next = Instant::now() + Duration::from_millis(gather_ms);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let batch = flowlens.gather();
        stamps.push(batch_ms(&batch));
        let reply = server.write("ntopng", batch.as_bytes());
        assert_eq!(reply.status, 204, "{}\n{batch}", reply.body);
    }
    drop(flowlens);
    drop(shop);

    let influx = Influx {
        address: format!("127.0.0.1:{}", server.port),
        database: "ntopng".into(),
    };
    let range = TimeRange {
        from_ms: stamps[0] - 1000,
        to_ms: stamps.last().unwrap() + 1000,
        interval: format!("{}s", gather_ms / 1000),
    };
    for m in WRITTEN_TODAY {
        assert!(
            influx.has_points(m, &range).unwrap(),
            "the scenario wrote no {m}"
        );
    }

    let Checked {
        checked,
        failures,
        without_data,
    } = check_every_query(&dashboards(), &influx, &range, |_, _| {});
    eprintln!(
        "{checked} dashboard queries returned data; checked for errors only (no data yet): {without_data:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing dashboard queries:\n{}",
        failures.len(),
        failures.join("\n")
    );

    if let Ok(out) = std::env::var("FLOWLENS_RENDER_DASHBOARDS") {
        let status = Command::new(target_dir().join("flowlens-render-dashboards"))
            .args(["--address", &influx.address, "--database", "ntopng"])
            .args(["--from-ms", &range.from_ms.to_string()])
            .args(["--to-ms", &range.to_ms.to_string()])
            .args(["--interval", &range.interval, "--out", &out])
            // The scenario's pods (other containers of this host stay out of the pictures).
            .args(["--var", "namespace=shop"])
            .status()
            .expect("build the renderer first: cargo build -p flowlens-dashboards");
        assert!(status.success());
    }
}

// ------------------------------------------------------------------------------------------
// The .deb.

/// The cargo-deb release the package is built with (README "Install").
const CARGO_DEB: &str = "cargo-deb@3.8.0";

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Whether `cargo deb` runs; in CI, installs the pinned cargo-deb when it does not.
fn cargo_deb_available() -> bool {
    let runs = || {
        Command::new(cargo())
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs() {
        return true;
    }
    if !in_ci() {
        eprintln!(
            "SKIP deb_installs_runs_and_purges_cleanly: cargo-deb is not installed \
             (cargo install --locked {CARGO_DEB})"
        );
        return false;
    }
    let status = Command::new(cargo())
        .args(["install", "--locked", CARGO_DEB])
        .status()
        .unwrap();
    assert!(status.success(), "cargo install --locked {CARGO_DEB}");
    assert!(runs(), "cargo deb does not run after installing it");
    true
}

/// Every agent configuration of telegraf.d/ and vector.d/ is an asset of the .deb (read from
/// the cargo-deb metadata, without building it; deb_installs_runs_and_purges_cleanly checks the
/// installed files).
#[test]
fn the_deb_ships_every_agent_config() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("shim/Cargo.toml")).unwrap()).unwrap();
    let assets: Vec<(String, String)> = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (dir, installed) in [
        ("telegraf.d", "etc/telegraf/telegraf.d/"),
        ("vector.d", "usr/share/flowlens/vector/"),
    ] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let source = format!("../{dir}/{name}");
            let target = format!("{installed}{name}");
            assert!(
                assets.iter().any(|(s, t)| *s == source && *t == target),
                "{source} is not installed as /{target}: {assets:?}"
            );
        }
    }
}

/// `apt-get <args>`, non-interactive, waiting up to 5 minutes for the dpkg lock (on a fresh
/// machine apt-daily or unattended-upgrades may hold it; dpkg itself would fail at once).
fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Purges the package (`apt-get purge`; nothing to do when it is not installed).
fn purge() {
    let _ = apt_get(&["purge", "flowlens"]).output();
}

/// Purges the package when dropped, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
    }
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn deb_installs_runs_and_purges_cleanly() {
    if !require_root("deb_installs_runs_and_purges_cleanly") || !cargo_deb_available() {
        return;
    }
    let started = Instant::now();
    let out_dir = TempDir::new("deb");
    // The documented command (README "Install"), with the output in a temporary directory.
    let status = Command::new(cargo())
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "-p",
            "flowlens",
            "-p",
            "flowlens-plugin",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --release failed");
    let status = Command::new(cargo())
        .current_dir(repo())
        .args(["deb", "-p", "flowlens", "--no-build", "--strip", "--output"])
        .arg(&out_dir.0)
        .status()
        .unwrap();
    assert!(status.success(), "cargo deb failed");
    let deb = std::fs::read_dir(&out_dir.0)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    let built = started.elapsed();

    // Contents and conffiles.
    let listing =
        String::from_utf8(run("dpkg-deb", &["--contents", deb.to_str().unwrap()]).stdout).unwrap();
    let paths: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let mut expected = vec![
        "/usr/bin/flowlens".to_string(),
        "/usr/lib/flowlens/libflowlens.so".into(),
        "/etc/flowlens/flowlens.toml".into(),
        "/etc/telegraf/telegraf.d/flowlens.conf".into(),
        "/usr/share/flowlens/vector/flowlens.toml".into(),
        "/usr/share/flowlens/vector/flowlens-metrics.toml".into(),
        "/usr/share/flowlens/grafana/provisioning/dashboards.yaml".into(),
        "/usr/share/flowlens/grafana/provisioning/datasources.yaml".into(),
        "/usr/share/doc/flowlens/metrics.md".into(),
    ];
    for (path, _) in dashboards() {
        expected.push(format!(
            "/usr/share/flowlens/grafana/dashboards/{}",
            path.file_name().unwrap().to_string_lossy()
        ));
    }
    for p in &expected {
        assert!(paths.contains(p), "{p} is not in the .deb:\n{listing}");
    }
    let conffiles =
        String::from_utf8(run("dpkg-deb", &["--info", deb.to_str().unwrap(), "conffiles"]).stdout)
            .unwrap();
    for p in [
        "/etc/flowlens/flowlens.toml",
        "/etc/telegraf/telegraf.d/flowlens.conf",
    ] {
        assert!(
            conffiles.lines().any(|l| l == p),
            "{p} is not a conffile:\n{conffiles}"
        );
    }

    // Install on this machine.
    purge();
    let existed: Vec<String> = paths
        .iter()
        .filter(|p| Path::new(p).exists())
        .cloned()
        .collect();
    assert!(
        !existed.contains(&"/usr/bin/flowlens".to_string()),
        "/usr/bin/flowlens exists and belongs to no package"
    );
    let installed = Installed;
    // The local file through apt-get for its lock wait: its dependencies are installed already,
    // so nothing is downloaded (no recommends, as with dpkg --install).
    let out = apt_get(&["install", "--no-install-recommends"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apt-get install {}: {}\n{}",
        deb.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let owned = String::from_utf8(run("dpkg", &["-L", "flowlens"]).stdout).unwrap();
    for p in &expected {
        assert!(owned.lines().any(|l| l == p), "dpkg -L lacks {p}");
        assert!(Path::new(p).is_file(), "{p} is not installed");
    }
    // The shipped files are the repository's.
    for (installed_path, source) in [
        ("/etc/flowlens/flowlens.toml", "packaging/flowlens.toml"),
        (
            "/etc/telegraf/telegraf.d/flowlens.conf",
            "telegraf.d/flowlens.conf",
        ),
        (
            "/usr/share/flowlens/vector/flowlens.toml",
            "vector.d/flowlens.toml",
        ),
        (
            "/usr/share/flowlens/vector/flowlens-metrics.toml",
            "vector.d/flowlens-metrics.toml",
        ),
        ("/usr/share/doc/flowlens/metrics.md", "docs/metrics.md"),
    ] {
        assert_eq!(
            std::fs::read_to_string(installed_path).unwrap(),
            std::fs::read_to_string(repo().join(source)).unwrap(),
            "{installed_path}"
        );
    }
    // The Telegraf snippet runs the installed binary.
    let snippet = std::fs::read_to_string("/etc/telegraf/telegraf.d/flowlens.conf").unwrap();
    assert!(snippet.contains(r#"command = ["/usr/bin/flowlens", "telegraf"]"#));

    // The installed binary finds its plugin in /usr/lib/flowlens.
    let doctor = String::from_utf8(run("/usr/bin/flowlens", &["doctor"]).stdout).unwrap();
    assert!(
        doctor.contains("ok      plugin: /usr/lib/flowlens/libflowlens.so"),
        "{doctor}"
    );
    let help = String::from_utf8(run("/usr/bin/flowlens", &["--help"]).stdout).unwrap();
    for mode in ["telegraf", "stream", "once", "doctor", "print-config"] {
        assert!(help.contains(mode), "--help lacks {mode}:\n{help}");
    }
    let defaults = run("/usr/bin/flowlens", &["print-config"]).stdout;
    assert_eq!(
        String::from_utf8(defaults).unwrap(),
        std::fs::read_to_string("/etc/flowlens/flowlens.toml").unwrap(),
        "the conffile is the commented defaults"
    );
    for args in [
        &["once"][..],
        &["--config", "/etc/flowlens/flowlens.toml", "once"][..],
    ] {
        let out = run("/usr/bin/flowlens", args);
        let text = String::from_utf8(out.stdout).unwrap();
        flowlens_core::lineproto::validate(&text).unwrap();
        monotonic::checked(&text);
        assert!(!lines_of(&text, "iface:traffic").is_empty(), "{text}");
        let internal = lines_of(&text, "flowlens:internal").join("\n");
        assert!(internal.contains("probes_attached="), "{internal}");
        if in_ci() {
            assert!(internal.contains("probes_failed=0i"), "{internal}");
        }
    }

    // Purge: nothing the package put on the machine stays.
    drop(installed);
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "flowlens"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "still installed: {status}"
    );
    let left: Vec<&str> = owned
        .lines()
        .filter(|p| !p.is_empty() && *p != "/." && !existed.iter().any(|e| e == p))
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(left.is_empty(), "left behind after purge: {left:?}");
    eprintln!(
        "deb: built in {:.0?}, installed, ran and purged in {:.0?} more",
        built,
        started.elapsed() - built
    );
}

// ------------------------------------------------------------------------------------------
// Kubernetes.

/// The text of the literal block scalar `key: |` in a YAML file, its indentation removed.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}: |`"));
    let key_indent = header.len() - header.trim_start().len();
    let mut indent = None;
    let mut out = String::new();
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= key_indent {
            break;
        }
        let indent = *indent.get_or_insert(this);
        out.push_str(&line[indent.min(this)..]);
        out.push('\n');
    }
    out.trim_end_matches('\n').to_string() + "\n"
}

#[test]
fn kubernetes_configmap_embeds_the_telegraf_snippet() {
    let configmap =
        std::fs::read_to_string(repo().join("packaging/kubernetes/configmap.yaml")).unwrap();
    let telegraf_conf = block_scalar(&configmap, "telegraf.conf");
    let snippet = std::fs::read_to_string(repo().join("telegraf.d/flowlens.conf")).unwrap();
    assert!(
        telegraf_conf.ends_with(&snippet),
        "the ConfigMap's telegraf.conf must end with telegraf.d/flowlens.conf, verbatim:\n\
         --- telegraf.conf ---\n{telegraf_conf}--- telegraf.d/flowlens.conf ---\n{snippet}"
    );
    assert_eq!(telegraf_conf.matches("[[inputs.execd]]").count(), 1);
    assert!(telegraf_conf.contains("urls = [\"${INFLUXDB_URL}\"]"));

    // The DaemonSet: capabilities, not privileged; the host's directories read-only.
    let ds = std::fs::read_to_string(repo().join("packaging/kubernetes/daemonset.yaml")).unwrap();
    assert!(ds.contains("privileged: false") && !ds.contains("privileged: true"));
    // The node's name as Kubernetes knows it, where flowlens reads it (the `node` tag).
    let node_env = format!(
        "- name: {}\n              valueFrom:\n                fieldRef:\n                  \
         fieldPath: spec.nodeName\n",
        flowlens::config::NODE_ENV
    );
    assert!(ds.contains(&node_env), "daemonset.yaml lacks\n{node_env}");
    for needed in [
        "hostPID: true",
        "hostNetwork: true",
        "- BPF",
        "- PERFMON",
        "- SYS_ADMIN",
        "- SYS_PTRACE",
        "- NET_ADMIN",
        "secretKeyRef:",
        "name: flowlens-influxdb",
        "name: flowlens-telegraf",
        "command: [\"/usr/bin/flowlens\", \"health\"]",
        "mountPath: /run\n",
    ] {
        assert!(ds.contains(needed), "daemonset.yaml lacks {needed}");
    }
    for host_dir in [
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/run/containerd",
        "/run/containers",
        "/var/lib/docker/containers",
        "/var/log/containers",
        "/var/log/pods",
    ] {
        let mount = ds
            .split("- name: ")
            .find(|m| m.contains(&format!("mountPath: {host_dir}\n")))
            .unwrap_or_else(|| panic!("{host_dir} is not mounted"));
        assert!(
            mount.contains("readOnly: true"),
            "{host_dir} must be read-only"
        );
        assert!(
            ds.contains(&format!("path: {host_dir}\n")),
            "{host_dir} is not a hostPath"
        );
    }
}

/// kubernetes-validate, the version the manifests are checked with (pip).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The Kubernetes release the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The kubernetes-validate command: on PATH, or installed (pinned) into a virtual environment
/// under the target directory (Debian's python3 refuses system-wide pip installs; the venv needs
/// Debian's python3-venv). `None` (skip) only outside CI.
fn kubernetes_validate() -> Option<PathBuf> {
    let runs = |cmd: &Path| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = PathBuf::from("kubernetes-validate");
    if runs(&on_path) {
        return Some(on_path);
    }
    let venv = target_dir().join("kubernetes-validate-venv");
    let installed = venv.join("bin/kubernetes-validate");
    if runs(&installed) {
        return Some(installed);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--retries", "10", "--timeout", "60"])
            .arg(KUBERNETES_VALIDATE)
            .status()
            .is_ok_and(|s| s.success());
    if made && runs(&installed) {
        return Some(installed);
    }
    assert!(
        !in_ci(),
        "CI must validate the manifests: installing {KUBERNETES_VALIDATE} into {} failed \
         (needs python3-venv and PyPI)",
        venv.display()
    );
    eprintln!(
        "SKIP kubernetes_manifests_validate: kubernetes-validate is not on PATH and installing \
         {KUBERNETES_VALIDATE} into a venv failed (apt-get install python3-venv; PyPI reachable?)"
    );
    None
}

#[test]
fn kubernetes_manifests_validate() {
    let Some(validator) = kubernetes_validate() else {
        return;
    };
    let dir = repo().join("packaging/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed ").count(), files.len(), "{text}");
}
