//! The Prometheus text exposition format (version 0.0.4), as rendered by
//! metrics-exporter-prometheus: `# HELP` and `# TYPE` lines, samples `name{a="b"} value
//! [timestamp]` with escaped label values (`\"`, `\\`, `\n`) and the special values `+Inf`,
//! `-Inf` and `NaN`.
//!
//! Parsing never panics: a line that does not follow the format is skipped and counted in
//! [`Parsed::malformed`]. A [`Snapshot`] keys the samples of one scrape by name and labels.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Label names to values, ordered so equal label sets compare and hash equal.
pub type Labels = BTreeMap<String, String>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// The type a `# TYPE` line declares for a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// What a parse found.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub samples: Vec<Sample>,
    /// Family name to declared type, from `# TYPE` lines.
    pub types: HashMap<String, MetricType>,
    /// Lines skipped because they do not follow the format.
    pub malformed: usize,
}

impl Parsed {
    /// Whether a sample holds a cumulative value (a counter, or a histogram's or summary's
    /// `_bucket`, `_sum` and `_count`), which only grows until its process restarts.
    pub fn is_cumulative(&self, sample_name: &str) -> bool {
        let family = |suffix: &str| sample_name.strip_suffix(suffix);
        match self.types.get(sample_name) {
            Some(MetricType::Counter) => return true,
            Some(_) => return false,
            None => {}
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(f) = family(suffix) {
                if matches!(
                    self.types.get(f),
                    Some(MetricType::Histogram | MetricType::Summary)
                ) {
                    return true;
                }
            }
        }
        sample_name.ends_with("_total")
    }
}

/// Parses an exposition text.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next())
                else {
                    out.malformed += 1;
                    continue;
                };
                let kind = match kind {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    "untyped" => MetricType::Untyped,
                    _ => {
                        out.malformed += 1;
                        continue;
                    }
                };
                out.types.insert(name.to_string(), kind);
            }
            continue;
        }
        match parse_sample(line) {
            Some(s) => out.samples.push(s),
            None => out.malformed += 1,
        }
    }
    out
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn parse_sample(line: &str) -> Option<Sample> {
    let b = line.as_bytes();
    let mut i = 0;
    if !b.first().copied().is_some_and(is_name_start) {
        return None;
    }
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let name = line[..i].to_string();
    let mut labels = Labels::new();
    let after_name = skip_spaces(b, i);
    if b.get(after_name) == Some(&b'{') {
        i = after_name + 1;
        loop {
            i = skip_spaces(b, i);
            match b.get(i)? {
                b'}' => {
                    i += 1;
                    break;
                }
                c if is_name_start(*c) && *c != b':' => {}
                _ => return None,
            }
            let start = i;
            while i < b.len() && is_name_char(b[i]) && b[i] != b':' {
                i += 1;
            }
            let lname = &line[start..i];
            i = skip_spaces(b, i);
            if b.get(i) != Some(&b'=') {
                return None;
            }
            i = skip_spaces(b, i + 1);
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let mut value = String::new();
            let mut chars = line[i..].char_indices();
            let end = loop {
                let (off, c) = chars.next()?;
                match c {
                    '"' => break i + off + 1,
                    '\\' => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    c => value.push(c),
                }
            };
            i = end;
            if labels.insert(lname.to_string(), value).is_some() {
                return None;
            }
            i = skip_spaces(b, i);
            match b.get(i)? {
                b',' => i += 1,
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut words = rest.split_whitespace();
    let value = parse_value(words.next()?)?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>().ok()?;
    }
    if words.next().is_some() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => {
            // Rust also reads "inf", "infinity" and "nan" in any case; the format does not.
            if s.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                s.parse().ok()
            } else {
                None
            }
        }
    }
}

/// Formats a value the way the format spells it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// Renders samples as exposition text (one line each, label values escaped).
pub fn render<'a>(samples: impl IntoIterator<Item = (&'a str, &'a Labels, f64)>) -> String {
    let mut out = String::new();
    for (name, labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (n, (k, v)) in labels.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", format_value(value));
    }
    out
}

/// The samples of one scrape, keyed by name and labels. Samples with the same name and labels
/// are summed (so the scrapes of several nodes add up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    series: HashMap<String, HashMap<Labels, f64>>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an exposition text; returns the snapshot and the number of malformed lines.
    pub fn from_text(text: &str) -> (Self, usize) {
        let parsed = parse(text);
        let mut s = Self::new();
        for sample in parsed.samples {
            s.add(sample.name, sample.labels, sample.value);
        }
        (s, parsed.malformed)
    }

    /// Adds a sample (summed with an existing one of the same name and labels).
    pub fn add(&mut self, name: impl Into<String>, labels: Labels, value: f64) {
        *self
            .series
            .entry(name.into())
            .or_default()
            .entry(labels)
            .or_insert(0.0) += value;
    }

    /// Every series of a name with its value.
    pub fn series<'a>(&'a self, name: &str) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.series
            .get(name)
            .into_iter()
            .flat_map(|m| m.iter().map(|(l, v)| (l, *v)))
    }

    /// The value of one series.
    pub fn get(&self, name: &str, labels: &Labels) -> Option<f64> {
        self.series.get(name)?.get(labels).copied()
    }

    /// The sum of every series of a name (a gauge without labels is its one value); `None`
    /// when the name is absent.
    pub fn total(&self, name: &str) -> Option<f64> {
        let m = self.series.get(name)?;
        (!m.is_empty()).then(|| m.values().sum())
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.series.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renders the snapshot as exposition text (names sorted, for stable output).
    pub fn render(&self) -> String {
        let mut names: Vec<&String> = self.series.keys().collect();
        names.sort();
        let mut rows = Vec::new();
        for name in names {
            let mut series: Vec<_> = self.series[name].iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            rows.extend(series.into_iter().map(|(l, v)| (name.as_str(), l, *v)));
        }
        render(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_exporter_output() {
        let text = "\
# HELP outcall_calls_total Finished calls by outcome, trunk and campaign
# TYPE outcall_calls_total counter
outcall_calls_total{outcome=\"answered_human\",trunk=\"carrier-a\",campaign=\"1\"} 120
outcall_calls_total{outcome=\"busy\",trunk=\"carrier-a\",campaign=\"1\"} 40

# TYPE outcall_queue_due_tasks gauge
outcall_queue_due_tasks 17
# TYPE outcall_http_request_duration_seconds histogram
outcall_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/calls\",le=\"0.5\"} 3
outcall_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/calls\",le=\"+Inf\"} 4
outcall_http_request_duration_seconds_sum{method=\"GET\",route=\"/v1/calls\"} 1.25e0
outcall_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/calls\"} 4
";
        let p = parse(text);
        assert_eq!(p.malformed, 0);
        assert_eq!(p.samples.len(), 7);
        assert_eq!(p.samples[0].name, "outcall_calls_total");
        assert_eq!(
            p.samples[0].labels,
            labels(&[
                ("outcome", "answered_human"),
                ("trunk", "carrier-a"),
                ("campaign", "1")
            ])
        );
        assert_eq!(p.samples[0].value, 120.0);
        assert_eq!(p.samples[2].name, "outcall_queue_due_tasks");
        assert!(p.samples[2].labels.is_empty());
        assert_eq!(p.samples[4].value, 4.0);
        assert_eq!(p.samples[4].labels["le"], "+Inf");
        assert_eq!(p.samples[5].value, 1.25);
        assert_eq!(p.types["outcall_calls_total"], MetricType::Counter);
        assert!(p.is_cumulative("outcall_calls_total"));
        assert!(p.is_cumulative("outcall_http_request_duration_seconds_bucket"));
        assert!(p.is_cumulative("outcall_http_request_duration_seconds_count"));
        assert!(!p.is_cumulative("outcall_queue_due_tasks"));
    }

    #[test]
    fn unescapes_label_values_and_reads_special_values_and_timestamps() {
        let p = parse(concat!(
            "m{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",u=\"号码\"} +Inf 1700000000000\n",
            "m{x=\"1\",} -Inf\n",
            "m NaN\n",
            "m { a = \"b\" } 2\n",
        ));
        assert_eq!(p.malformed, 0, "{p:?}");
        let l = &p.samples[0].labels;
        assert_eq!(l["path"], "C:\\dir");
        assert_eq!(l["quote"], "say \"hi\"");
        assert_eq!(l["nl"], "a\nb");
        assert_eq!(l["u"], "号码");
        assert_eq!(p.samples[0].value, f64::INFINITY);
        assert_eq!(p.samples[1].value, f64::NEG_INFINITY);
        assert_eq!(p.samples[1].labels["x"], "1");
        assert!(p.samples[2].value.is_nan());
        assert_eq!(p.samples[3].labels["a"], "b");
    }

    #[test]
    fn skips_and_counts_malformed_lines_without_panicking() {
        let bad = [
            "1abc 2",
            "m{a=\"b} 1",
            "m{a=b} 1",
            "m{a=\"b\" 1",
            "m{a=\"b\"}",
            "m{a=\"x\\q\"} 1",
            "m{a=\"1\",a=\"2\"} 1",
            "m 1 2 3",
            "m 1 notatime",
            "m one",
            "m inf",
            "m{\"a\"=\"b\"} 1",
            "m{a=\"b\"}1",
            "# TYPE m",
            "# TYPE m strange",
            "{a=\"b\"} 1",
            "m{a=\"\u{e9}",
        ];
        let text = format!("ok 1\n{}\nok2 2\n", bad.join("\n"));
        let p = parse(&text);
        assert_eq!(p.malformed, bad.len(), "{:?}", p.samples);
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.samples[1].name, "ok2");
        // Every prefix of a valid line parses or is counted, never panics.
        let line = "m{a=\"b\\\"c\",d=\"é\"} 1.5 17";
        for (i, _) in line.char_indices() {
            let _ = parse(&line[..i]);
        }
    }

    #[test]
    fn render_round_trips_through_parse() {
        let mut s = Snapshot::new();
        s.add(
            "m",
            labels(&[("a", "quote \" back \\ nl \n"), ("b", "x")]),
            2.5,
        );
        s.add("m", labels(&[("a", "y")]), f64::INFINITY);
        s.add("g", Labels::new(), 3.0);
        let (back, malformed) = Snapshot::from_text(&s.render());
        assert_eq!(malformed, 0);
        assert_eq!(back, s);
    }

    #[test]
    fn snapshot_sums_equal_series_and_totals_a_name() {
        let (s, _) = Snapshot::from_text(
            "c_total{t=\"a\"} 1\nc_total{t=\"a\"} 2\nc_total{t=\"b\"} 4\ng 5\n",
        );
        assert_eq!(s.get("c_total", &labels(&[("t", "a")])), Some(3.0));
        assert_eq!(s.total("c_total"), Some(7.0));
        assert_eq!(s.total("g"), Some(5.0));
        assert_eq!(s.total("absent"), None);
        assert_eq!(s.len(), 3);
    }
}
