#!/usr/bin/env bash
# Validates the shipped Prometheus and Grafana files under deploy/ with the real tools:
# promtool (check config, check rules, test rules), yamllint on every YAML file, jq on the
# dashboard, and promtool again on every PromQL expression of the dashboard (its variables
# replaced by match-all values). Installs promtool (Debian `prometheus`), yamllint and jq when
# missing. Quiet on success; prints the failing tool's output and exits non-zero otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

need_debs promtool:prometheus yamllint:yamllint jq:jq

PROM=deploy/prometheus
DASH=deploy/grafana/dashboards/outcall.json

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Runs a command quietly; on failure prints what it said and stops.
run() {
  if ! "$@" >"$tmp/out" 2>&1; then
    printf '\033[1;31mcheck-deploy: failed: %s\033[0m\n' "$*" >&2
    cat "$tmp/out" >&2
    exit 1
  fi
}

# YAML syntax (and duplicate keys) of every shipped YAML file.
mapfile -t yamls < <(find deploy -name '*.yml' -o -name '*.yaml' | sort)
run yamllint --strict -d '{extends: relaxed, rules: {line-length: disable}}' "${yamls[@]}"

# The configuration reads the API key from /etc/prometheus/outcall-api-key, which promtool
# requires to exist: check a copy that points at a throwaway key instead.
mkdir -p "$tmp/prometheus"
cp -R "$PROM/." "$tmp/prometheus/"
printf 'oc_0_check\n' >"$tmp/prometheus/outcall-api-key"
sed -i "s#/etc/prometheus/outcall-api-key#$tmp/prometheus/outcall-api-key#" "$tmp/prometheus/prometheus.yml"
run promtool check config "$tmp/prometheus/prometheus.yml"

run promtool check rules "$PROM/rules/outcall.rules.yml"
(cd "$PROM/rules" && run promtool test rules outcall.rules.test.yml)

# The dashboard: valid JSON, then every query it sends (panel targets and the selectors of its
# label_values() variables) parses as PromQL, checked as recording rules by promtool.
run jq -e '.panels | length > 0' "$DASH"
run jq '
  def promql: gsub("\\$__rate_interval"; "1m") | gsub("\\$\\{?[a-z_]+\\}?"; ".*");
  [ (.panels[] | select(.type != "row") | .targets[].expr),
    (.templating.list[] | select(.type == "query") | .definition
       | capture("^label_values\\((?<sel>.+),\\s*[a-z_]+\\)$").sel) ]
  | { groups: [ { name: "dashboard",
                  rules: [ to_entries[] | { record: "dashboard:query_\(.key)", expr: (.value | promql) } ] } ] }
' "$DASH"
cp "$tmp/out" "$tmp/dashboard-queries.json"
run promtool check rules "$tmp/dashboard-queries.json"
