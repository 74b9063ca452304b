#!/usr/bin/env bash
# Renders the README's dashboard pictures (packaging/grafana/img/*.png) from real data, end to
# end: a real InfluxDB 1.x, the real flowlens gathering real TCP traffic of stand-in containers in
# two pods (network namespaces joined by a veth pair), then every dashboard's InfluxQL drawn by
# flowlens-render-dashboards. It runs the scenario of the dashboards' integration test
# (tests/packaging.rs) with more gathers. Needs root, influxd (Debian: influxdb) and
# fonts-dejavu-core. GATHERS (default 45) gathers, GATHER_MS (default 2000) apart.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

cargo build -p flowlens -p flowlens-plugin -p flowlens-dashboards
FLOWLENS_RENDER_DASHBOARDS="$PWD/packaging/grafana/img" \
FLOWLENS_DASHBOARD_GATHERS="${GATHERS:-45}" \
FLOWLENS_DASHBOARD_GATHER_MS="${GATHER_MS:-2000}" \
	cargo test -p flowlens-tests --test packaging -- --exact \
	every_dashboard_query_returns_data_from_real_flowlens_output --nocapture
