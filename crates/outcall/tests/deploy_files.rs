//! The shipped operator files under `deploy/` (Prometheus configuration, recording and alerting
//! rules with their unit tests, Grafana dashboard and provisioning) and `docs/monitoring.md`
//! name only metrics of the catalogue (`outcall_domain::metrics`), with labels the catalogue
//! lists for them and in ways their kinds allow. A metric renamed in the catalogue, or a label
//! dropped, fails here until the dashboards and rules follow.
//!
//! `scripts/check-deploy.sh` checks the same files with promtool (syntax, rule unit tests) and
//! jq; this test checks them against the code.

use outcall_domain::metrics::{self, Def, Kind};
use outcall_domain::Outcome;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One mention of a catalogue-like metric name in a text.
#[derive(Debug)]
struct Mention {
    /// As written: `outcall_call_setup_seconds_bucket`.
    name: String,
    /// Byte range of the name in the text.
    at: std::ops::Range<usize>,
    /// Label matchers of its selector.
    matchers: Vec<Matcher>,
    /// The function it is the direct argument of (`rate`, `label_values`, ...), if any.
    func: Option<String>,
    /// For `label_values(metric, label)`: the label.
    values_of: Option<String>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(s: &[u8], i: usize) -> (String, usize) {
    let mut j = i;
    while j < s.len() && is_ident(s[j]) {
        j += 1;
    }
    (String::from_utf8_lossy(&s[i..j]).into_owned(), j)
}

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

/// Parses `label op "value", ...}` from just after a `{`; returns the matchers and the index
/// after the closing brace.
fn matchers_at(s: &[u8], mut i: usize) -> Result<(Vec<Matcher>, usize), String> {
    let mut out = Vec::new();
    loop {
        i = skip_ws(s, i);
        match s.get(i) {
            None => return Err("unclosed selector".into()),
            Some(b'}') => return Ok((out, i + 1)),
            Some(b',') => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let (label, j) = ident_at(s, i);
        if label.is_empty() {
            return Err(format!("label expected at `{}`", lossy(s, i)));
        }
        i = skip_ws(s, j);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| s[i..].starts_with(op.as_bytes()))
            .ok_or_else(|| format!("matcher operator expected after `{label}`"))?;
        i = skip_ws(s, i + op.len());
        let q = *s.get(i).ok_or("unclosed selector")?;
        if !matches!(q, b'"' | b'\'' | b'`') {
            return Err(format!("quoted value expected for `{label}`"));
        }
        let mut j = i + 1;
        while j < s.len() && s[j] != q {
            j += if s[j] == b'\\' { 2 } else { 1 };
        }
        if j >= s.len() {
            return Err(format!("unclosed value of `{label}`"));
        }
        out.push((
            label,
            op.to_string(),
            String::from_utf8_lossy(&s[i + 1..j]).into_owned(),
        ));
        i = j + 1;
    }
}

fn lossy(s: &[u8], i: usize) -> String {
    String::from_utf8_lossy(&s[i..(i + 30).min(s.len())]).into_owned()
}

/// Finds every `outcall_*` and `process_*` name in `text` that is not a recording-rule name
/// (those hold a `:`), with its selector and the function around it.
fn mentions(text: &str) -> Result<Vec<Mention>, String> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if !is_ident(s[i]) {
            i += 1;
            continue;
        }
        let (tok, end) = ident_at(s, i);
        let start = i;
        i = end;
        if tok.contains(':') || !(tok.starts_with("outcall_") || tok.starts_with("process_")) {
            continue;
        }
        // The function whose first argument this is: `rate(` just before it.
        let mut k = start;
        while k > 0 && s[k - 1].is_ascii_whitespace() {
            k -= 1;
        }
        let func = if k > 0 && s[k - 1] == b'(' {
            let mut f = k - 1;
            while f > 0 && s[f - 1].is_ascii_alphanumeric() | (s[f - 1] == b'_') {
                f -= 1;
            }
            Some(String::from_utf8_lossy(&s[f..k - 1]).into_owned()).filter(|f| !f.is_empty())
        } else {
            None
        };
        let mut j = skip_ws(s, end);
        let mut matchers = Vec::new();
        if s.get(j) == Some(&b'{') {
            let (m, after) = matchers_at(s, j + 1).map_err(|e| format!("{tok}: {e}"))?;
            matchers = m;
            j = after;
        }
        let mut values_of = None;
        if func.as_deref() == Some("label_values") {
            let c = skip_ws(s, j);
            if s.get(c) == Some(&b',') {
                values_of = Some(ident_at(s, skip_ws(s, c + 1)).0);
            }
        }
        out.push(Mention {
            name: tok,
            at: start..end,
            matchers,
            func,
            values_of,
        });
    }
    Ok(out)
}

/// Functions that only make sense over counters, and over gauges.
const COUNTER_FUNCS: &[&str] = &["rate", "irate", "increase", "resets"];
const GAUGE_FUNCS: &[&str] = &["delta", "idelta", "deriv", "predict_linear"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The catalogue entry of a name as written, and the histogram suffix it carries.
fn resolve(name: &str) -> Option<(&'static Def, Option<&'static str>)> {
    if let Some(d) = metrics::def(name) {
        return Some((d, None));
    }
    ["_bucket", "_sum", "_count"].into_iter().find_map(|suf| {
        let d = metrics::def(name.strip_suffix(suf)?)?;
        (d.kind == Kind::Histogram).then_some((d, Some(suf)))
    })
}

fn allowed_labels(d: &Def, suffix: Option<&str>) -> Vec<&'static str> {
    let mut l: Vec<&'static str> = d.labels.to_vec();
    l.extend(TARGET_LABELS);
    if suffix == Some("_bucket") {
        l.push("le");
    }
    l
}

/// Every problem with the metric names and labels in `text`. `bare_histograms` allows a
/// histogram's own name (documentation tables name histograms that way; queries cannot).
fn check_text(text: &str, bare_histograms: bool) -> Vec<String> {
    let ms = match mentions(text) {
        Ok(ms) => ms,
        Err(e) => return vec![e],
    };
    let outcomes: BTreeSet<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    let mut errs = Vec::new();
    for m in &ms {
        let Some((d, suffix)) = resolve(&m.name) else {
            errs.push(format!("`{}` is not in the metric catalogue", m.name));
            continue;
        };
        let kind = match (d.kind, suffix) {
            (Kind::Histogram, Some(_)) => Kind::Counter,
            (Kind::Histogram, None) if !bare_histograms => {
                errs.push(format!(
                    "`{}` is a histogram: query `{0}_bucket`, `{0}_sum` or `{0}_count`",
                    m.name
                ));
                continue;
            }
            (k, _) => k,
        };
        if let Some(f) = m.func.as_deref() {
            if kind != Kind::Counter && COUNTER_FUNCS.contains(&f) {
                errs.push(format!("{f}() over `{}`, which is no counter", m.name));
            }
            if kind != Kind::Gauge && GAUGE_FUNCS.contains(&f) {
                errs.push(format!("{f}() over `{}`, which is no gauge", m.name));
            }
        }
        let allowed = allowed_labels(d, suffix);
        let used = m
            .matchers
            .iter()
            .map(|(l, _, _)| l.as_str())
            .chain(m.values_of.as_deref());
        for l in used {
            if !allowed.contains(&l) {
                errs.push(format!(
                    "`{}` has no label `{l}` (it has {allowed:?})",
                    m.name
                ));
            }
        }
        for (l, _, v) in &m.matchers {
            if l == "outcome" && !v.contains('$') {
                for alt in v.split('|') {
                    if !outcomes.contains(alt) {
                        errs.push(format!("`{}`: no outcome is called `{alt}`", m.name));
                    }
                }
            }
        }
    }
    errs.extend(check_grouping(text, &ms));
    errs
}

/// `sum by (a, b) (...)`: every grouping label exists on every catalogue metric inside the
/// parentheses (a label no series has merges everything into one line without a word).
fn check_grouping(text: &str, ms: &[Mention]) -> Vec<String> {
    let s = text.as_bytes();
    let mut errs = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("by") {
        let at = i + pos;
        i = at + 2;
        if (at > 0 && is_ident(s[at - 1])) || s.get(at + 2).is_some_and(|b| is_ident(*b)) {
            continue;
        }
        let open = skip_ws(s, at + 2);
        if s.get(open) != Some(&b'(') {
            continue;
        }
        let Some(close) = text[open..].find(')').map(|c| open + c) else {
            continue;
        };
        let labels: Vec<&str> = text[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if !labels.iter().all(|l| l.bytes().all(is_ident)) {
            continue; // prose, not PromQL
        }
        let body = skip_ws(s, close + 1);
        if s.get(body) != Some(&b'(') {
            continue;
        }
        let mut depth = 0;
        let mut end = body;
        for (k, b) in s.iter().enumerate().skip(body) {
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        for m in ms.iter().filter(|m| m.at.start > body && m.at.end <= end) {
            let Some((d, suffix)) = resolve(&m.name) else {
                continue;
            };
            let allowed = allowed_labels(d, suffix);
            for l in &labels {
                if !allowed.contains(l) {
                    errs.push(format!(
                        "by ({l}) over `{}`, which has no label `{l}`",
                        m.name
                    ));
                }
            }
        }
    }
    errs
}

/// The strings of a JSON document, so escaped quotes read as quotes.
fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

#[test]
fn deploy_files_name_only_catalogue_metrics_and_labels() {
    let mut errs = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = 0;
    for dir in ["deploy/prometheus", "deploy/grafana"] {
        for path in files_under(&repo().join(dir)) {
            files += 1;
            let raw = std::fs::read_to_string(&path).unwrap();
            let texts = if path.extension().is_some_and(|e| e == "json") {
                let v: serde_json::Value = serde_json::from_str(&raw)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut out = Vec::new();
                json_strings(&v, &mut out);
                out
            } else {
                vec![raw]
            };
            for t in &texts {
                for e in check_text(t, false) {
                    let rel = path.strip_prefix(repo()).unwrap_or(&path);
                    errs.push(format!("{}: {e}", rel.display()));
                }
                for m in mentions(t).unwrap_or_default() {
                    let base = resolve(&m.name).map_or(m.name.clone(), |(d, _)| d.name.into());
                    *seen.entry(base).or_default() += 1;
                }
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    // The scan found what the files are about (a broken scanner would pass on nothing).
    assert!(files >= 6, "only {files} files under deploy/");
    for name in [
        metrics::CALLS_TOTAL,
        metrics::HTTP_SECONDS,
        metrics::QUEUE_DUE,
        metrics::TRUNK_CIRCUIT,
        metrics::READY,
        metrics::PROCESS_RSS,
    ] {
        assert!(seen.contains_key(name), "{name} is used nowhere: {seen:?}");
    }
}

#[test]
fn the_check_finds_renamed_metrics_wrong_labels_and_kinds() {
    let bad = |t: &str| {
        let e = check_text(t, false);
        assert!(!e.is_empty(), "no error for {t}");
        e.join("; ")
    };
    assert!(bad("rate(outcall_call_total[5m])").contains("not in the metric catalogue"));
    assert!(bad(r#"outcall_calls_total{number="1"}"#).contains("no label `number`"));
    assert!(bad(r#"outcall_http_requests_total{le="1"}"#).contains("no label `le`"));
    assert!(bad("outcall_attempts_total_bucket").contains("not in the metric catalogue"));
    assert!(bad("rate(outcall_calls_active[5m])").contains("no counter"));
    assert!(bad("delta(outcall_calls_total[5m])").contains("no gauge"));
    assert!(bad("outcall_call_setup_seconds > 1").contains("is a histogram"));
    assert!(bad(r#"outcall_calls_total{outcome=~"busy|trunk_failure"}"#).contains("trunk_failure"));
    assert!(bad("label_values(outcall_attempts_total, outcome)").contains("no label `outcome`"));
    assert!(
        bad("sum by (campaign) (rate(outcall_sip_responses_total[1m]))").contains("by (campaign)")
    );
    assert!(bad(r#"outcall_calls_total{trunk="a""#).contains("unclosed"));
    // And what is right passes.
    let good = r#"histogram_quantile(0.99, sum by (job, le) (rate(outcall_http_request_duration_seconds_bucket{job=~"$job",route!="/metrics"}[5m])))
        / ignoring(x) sum by (trunk) (increase(outcall_calls_total{outcome!~"blocked|canceled",campaign=~"$campaign"}[2m]))
        and delta(outcall_queue_due_tasks[10m]) > 0 and job:outcall_asr:ratio > 0
        label_values(outcall_attempts_total{job="outcall"}, campaign) rate(process_cpu_seconds_total[1m])"#;
    assert_eq!(check_text(good, false), Vec::<String>::new());
}

#[test]
fn dashboard_is_well_formed() {
    let raw = read("deploy/grafana/dashboards/outcall.json");
    let d: serde_json::Value = serde_json::from_str(&raw).expect("the dashboard is JSON");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(!d["uid"].as_str().unwrap().is_empty());

    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no `{n}` variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for n in ["trunk", "campaign"] {
        assert_eq!(var(n)["type"], "query");
        let q = var(n)["definition"].as_str().unwrap();
        assert!(
            q.starts_with("label_values(") && q.ends_with(&format!(", {n})")),
            "{n}: {q}"
        );
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id twice: {title}"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title), "two panels titled {title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title} has no target");
        for t in targets {
            assert!(
                !t["expr"].as_str().unwrap_or_default().trim().is_empty(),
                "{title}"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            queries += 1;
        }
    }
    for want in [
        "Calls per second",
        "Concurrent calls",
        "Outcomes",
        "ASR per trunk",
        "ACD per trunk",
        "Setup time P50 / P90 / P99",
        "Dispatch latency P50 / P99",
        "SIP responses by code",
        "RTP packets",
        "RTP jitter P90",
        "Due contacts",
        "Oldest due contact",
        "Import rows by result",
        "API requests by route and status",
        "API latency P99 by route",
        "API 5xx ratio",
        "Webhook deliveries by result",
        "Store and bus errors",
        "Trunk rate factor",
        "Trunk circuit state",
        "Alerts firing",
        "CPU",
        "Resident memory",
        "Open file descriptors",
        "Threads",
    ] {
        assert!(titles.contains(want), "no panel `{want}`");
    }
    assert!(queries >= 40, "{queries} queries");
}

/// The rule blocks of the rules file: (`alert` or `record`, name, the block's text).
fn rule_blocks(rules: &str) -> Vec<(&'static str, String, String)> {
    let mut out: Vec<(&'static str, String, String)> = Vec::new();
    for line in rules.lines() {
        let t = line.trim_start();
        let head = [("alert", "- alert:"), ("record", "- record:")]
            .into_iter()
            .find(|(_, p)| t.starts_with(p));
        if let Some((kind, p)) = head {
            out.push((kind, t[p.len()..].trim().to_string(), String::new()));
        } else if t.starts_with("- name:") {
            out.push(("group", String::new(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.2.push_str(line);
            last.2.push('\n');
        }
    }
    out.retain(|b| b.0 != "group");
    out
}

#[test]
fn alerts_follow_the_outcome_classes_and_each_fires_and_stays_quiet_in_a_test() {
    let rules = read("deploy/prometheus/rules/outcall.rules.yml");
    let tests = read("deploy/prometheus/rules/outcall.rules.test.yml");

    // The failure outcomes of the alerts are the network faults; ASR counts the answered ones.
    let join = |f: fn(&Outcome) -> bool| {
        Outcome::ALL
            .iter()
            .filter(|o| f(o))
            .map(|o| o.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    let faults = format!(r#"outcome=~"{}""#, join(Outcome::is_network_fault));
    let answered = format!(r#"outcome=~"{}""#, join(Outcome::is_answered));
    assert!(rules.contains(&faults), "the rules do not count {faults}");
    assert!(
        rules.contains(&answered),
        "the rules do not count {answered}"
    );

    let blocks = rule_blocks(&rules);
    let alerts: Vec<_> = blocks.iter().filter(|b| b.0 == "alert").collect();
    let names: BTreeSet<&str> = alerts.iter().map(|b| b.1.as_str()).collect();
    for want in [
        "OutcallCallFailureRateHigh",
        "OutcallApiLatencyHigh",
        "OutcallApiErrorRateHigh",
        "OutcallTrunkDown",
        "OutcallQueueBacklogGrowing",
        "OutcallTrunkCircuitOpen",
        "OutcallNodeNotReady",
        "OutcallTargetDown",
    ] {
        assert!(names.contains(want), "no alert {want}: {names:?}");
    }
    for (_, name, body) in &alerts {
        for key in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no `{key}`");
        }
        let sev = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity:"))
            .unwrap()
            .trim();
        assert!(matches!(sev, "warning" | "critical"), "{name}: {sev}");
        // In the unit tests: at least one evaluation where it fires and one where it does not.
        let lines: Vec<&str> = tests.lines().collect();
        let (mut fires, mut quiet) = (false, false);
        for (k, l) in lines.iter().enumerate() {
            if l.trim() == format!("alertname: {name}") {
                match lines.get(k + 1).map(|n| n.trim()) {
                    Some("exp_alerts: []") => quiet = true,
                    Some("exp_alerts:") => fires = true,
                    other => panic!("{name}: unexpected line after alertname: {other:?}"),
                }
            }
        }
        assert!(fires, "no unit test where {name} fires");
        assert!(quiet, "no unit test where {name} stays quiet");
    }
    // Recording rules follow the level:metric:operations naming, so they never read as raw
    // metric names.
    for (_, name, _) in blocks.iter().filter(|b| b.0 == "record") {
        assert_eq!(name.matches(':').count(), 2, "recording rule {name}");
    }
}

/// Whether `text` holds something shaped like an API key: `oc_<id>_<secret>` with a secret of
/// 8 or more letters and digits (the placeholder `oc_<id>_<secret>` is not one).
fn holds_api_key(text: &str) -> bool {
    text.match_indices("oc_").any(|(i, _)| {
        let rest = &text[i + 3..];
        let id = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let Some(secret) = rest[id..].strip_prefix('_') else {
            return false;
        };
        id > 0 && secret.bytes().take_while(u8::is_ascii_alphanumeric).count() >= 8
    })
}

#[test]
fn prometheus_reads_the_api_key_from_a_file_and_loads_the_rules() {
    assert!(holds_api_key("x oc_12_AbCdEf0123456789 y"));
    assert!(!holds_api_key("an `oc_<id>_<secret>` key"));
    let cfg = read("deploy/prometheus/prometheus.yml");
    assert!(cfg.contains("job_name: outcall"));
    assert!(cfg.contains("type: Bearer"));
    assert!(cfg.contains("credentials_file: /etc/prometheus/outcall-api-key"));
    for forbidden in ["bearer_token:", "credentials:"] {
        assert!(
            !cfg.contains(forbidden),
            "prometheus.yml holds `{forbidden}`"
        );
    }
    assert!(!holds_api_key(&cfg), "prometheus.yml holds an API key");
    let rule_files: Vec<&str> = cfg
        .lines()
        .skip_while(|l| !l.starts_with("rule_files:"))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .map(|l| l.trim_start_matches("  - ").trim())
        .collect();
    assert_eq!(rule_files, ["rules/outcall.rules.yml"]);
    for f in rule_files {
        assert!(repo().join("deploy/prometheus").join(f).is_file(), "{f}");
    }
}

#[test]
fn monitoring_doc_lists_every_metric_of_the_catalogue() {
    let doc = read("docs/monitoring.md");
    let errs = check_text(&doc, true);
    assert!(errs.is_empty(), "docs/monitoring.md: {}", errs.join("\n"));
    for d in metrics::ALL {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", d.name)))
            .unwrap_or_else(|| panic!("docs/monitoring.md: no table row for `{}`", d.name));
        let kind = format!("{:?}", d.kind).to_lowercase();
        assert!(
            row.contains(&format!("| {kind} |")),
            "{}: kind {kind}",
            d.name
        );
        for l in d.labels {
            assert!(row.contains(&format!("`{l}`")), "{}: label {l}", d.name);
        }
    }
}
