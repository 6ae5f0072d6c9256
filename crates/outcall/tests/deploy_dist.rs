//! The deployment files of the distributed mode (`deploy/compose`, `deploy/k8s`,
//! `deploy/docker`, `deploy/kamailio`) against the code and the configuration contract.
//!
//! - Every `outcall.toml` of the compose stack and of the Kubernetes ConfigMaps parses and uses
//!   only the keys of `outcall.toml`: the existing ones (`[ua]`, `[[trunks]]` and `[monitor]`
//!   are deserialized into their real types, which refuse unknown fields) and those of the
//!   distributed mode (`node`, `roles`, `[store]`, `[redis]`, `[bus]`, `[rpc]`,
//!   `[recordings]`), whose values are checked for shape only.
//! - The role files agree with each other: one per role in both places, the same store and bus.
//! - The Dockerfile is multi-stage, runs as a non-root user, strips the binary and holds no
//!   secret; the build context and git keep the secret files out.
//!
//! `scripts/check-deploy-dist.sh` validates the same files with the real tools (Compose,
//! kubernetes-validate, hadolint, Kamailio) and runs this test.

use outcall_telephony::{TrunkConfig, UaConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

const ROLES: [&str; 5] = ["api", "scheduler", "dialer", "ingest", "monitor"];

/// Top-level keys `outcall.toml` has today (`AppConfig` in `src/cli/app.rs`).
const EXISTING_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "default_country_code",
    "shutdown_grace_secs",
    "max_concurrent_calls",
    "phone_dat",
    "attribution",
    "dedup_false_positive_rate",
    "number_status_ttl_days",
    "ua",
    "trunks",
    "classification",
    "token_ttl_hours",
    "audit_retention_days",
    "webhook_retention_days",
    "event_retention_days",
    "jwt_secret_file",
    "tls",
    "webhook_secret_file",
    "webhook_max_tries",
    "webhook_max_backoff_secs",
    "metrics",
    "drain_delay_secs",
    "monitor",
    "monitor_file",
    "monitor_enabled",
    "degradation",
];

/// Keys of the distributed mode: top-level ones, and the keys of each new table.
const NEW_KEYS: &[&str] = &["node", "roles"];
const NEW_TABLES: &[(&str, &[&str])] = &[
    (
        "store",
        &["url_file", "max_connections", "cdr_retention_months"],
    ),
    ("redis", &["url", "namespace"]),
    ("bus", &["kind", "url_file", "spool_dir"]),
    ("rpc", &["listen", "advertise"]),
    ("recordings", &["s3_bucket", "s3_endpoint", "s3_region"]),
];

/// Placeholder of a dialer's own address, replaced by its start command.
const POD_IP: &str = "@POD_IP@";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `deploy/compose/outcall-<role>.toml` and `deploy/k8s/config/outcall-<role>.toml`.
fn role_files() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for dir in ["deploy/compose", "deploy/k8s/config"] {
        for role in ROLES {
            out.push((format!("{dir}/outcall-{role}.toml"), role));
        }
    }
    out
}

fn parse(rel: &str, text: &str) -> Table {
    text.parse::<Table>()
        .unwrap_or_else(|e| panic!("{rel}: not TOML: {e}"))
}

fn expect_str<'a>(errs: &mut Vec<String>, at: &str, v: &'a Value) -> Option<&'a str> {
    let s = v.as_str();
    if s.is_none() {
        errs.push(format!("{at}: expected a string, found {}", v.type_str()));
    }
    s
}

fn expect_int(errs: &mut Vec<String>, at: &str, v: &Value, min: i64) {
    match v.as_integer() {
        Some(n) if n >= min => {}
        _ => errs.push(format!("{at}: expected an integer >= {min}, found {v}")),
    }
}

fn expect_addr(errs: &mut Vec<String>, at: &str, v: &Value) {
    if let Some(s) = expect_str(errs, at, v) {
        if s.parse::<SocketAddr>().is_err() {
            errs.push(format!("{at}: `{s}` is not host:port"));
        }
    }
}

fn expect_abs_path(errs: &mut Vec<String>, at: &str, v: &Value) {
    if let Some(s) = expect_str(errs, at, v) {
        if !s.starts_with('/') {
            errs.push(format!("{at}: `{s}` is not an absolute path"));
        }
    }
}

/// Deserializes `v` into `T` (whose serde refuses unknown fields), reporting the error.
fn expect_type<T: serde::de::DeserializeOwned>(errs: &mut Vec<String>, at: &str, v: &Value) {
    // The placeholder of a dialer's address stands for an IP address.
    let text = toml::to_string(&Table::from_iter([("x".to_string(), v.clone())]))
        .expect("a TOML value serializes")
        .replace(POD_IP, "192.0.2.10");
    let v = parse(at, &text).remove("x").expect("the value is there");
    if let Err(e) = v.try_into::<T>() {
        errs.push(format!("{at}: {e}"));
    }
}

/// Everything wrong with one `outcall.toml` against the contract; empty when it conforms.
fn contract_errors(rel: &str, cfg: &Table) -> Vec<String> {
    let mut errs = Vec::new();
    let tables: BTreeMap<&str, &[&str]> = NEW_TABLES.iter().copied().collect();
    for (key, v) in cfg {
        let at = format!("{rel}: {key}");
        if let Some(allowed) = tables.get(key.as_str()) {
            let Some(t) = v.as_table() else {
                errs.push(format!("{at}: expected a table"));
                continue;
            };
            for (k, v) in t {
                let at = format!("{rel}: {key}.{k}");
                if !allowed.contains(&k.as_str()) {
                    errs.push(format!("{at}: not a key of the configuration"));
                    continue;
                }
                match (key.as_str(), k.as_str()) {
                    (_, "url_file" | "spool_dir") => expect_abs_path(&mut errs, &at, v),
                    ("store", _) => expect_int(&mut errs, &at, v, 1),
                    ("redis", "url") => {
                        let ok = expect_str(&mut errs, &at, v).is_some_and(|s| {
                            s.starts_with("redis://") || s.starts_with("rediss://")
                        });
                        if !ok {
                            errs.push(format!("{at}: not a redis:// URL"));
                        }
                    }
                    ("bus", "kind") => {
                        let kind = expect_str(&mut errs, &at, v);
                        if !matches!(kind, Some("local" | "rabbitmq" | "nats")) {
                            errs.push(format!("{at}: {v} is not local, rabbitmq or nats"));
                        }
                    }
                    ("rpc", _) => expect_addr(&mut errs, &at, v),
                    _ => {
                        expect_str(&mut errs, &at, v);
                    }
                }
            }
            continue;
        }
        match key.as_str() {
            "node" => {
                expect_str(&mut errs, &at, v);
            }
            "roles" => match v.as_array() {
                Some(a) if !a.is_empty() => {
                    for r in a {
                        if !r.as_str().is_some_and(|r| ROLES.contains(&r)) {
                            errs.push(format!("{at}: {r} is not one of {ROLES:?}"));
                        }
                    }
                }
                _ => errs.push(format!("{at}: expected a list of roles")),
            },
            "ua" => expect_type::<UaConfig>(&mut errs, &at, v),
            "trunks" => match v.as_array() {
                Some(a) => {
                    for (i, t) in a.iter().enumerate() {
                        expect_type::<TrunkConfig>(&mut errs, &format!("{at}[{i}]"), t);
                    }
                }
                None => errs.push(format!("{at}: expected [[trunks]] tables")),
            },
            "monitor" => expect_type::<outcall_monitor::MonitorConfig>(&mut errs, &at, v),
            "listen" => expect_addr(&mut errs, &at, v),
            "data_dir" | "jwt_secret_file" | "webhook_secret_file" => {
                expect_abs_path(&mut errs, &at, v)
            }
            "shutdown_grace_secs" | "drain_delay_secs" | "max_concurrent_calls" => {
                expect_int(&mut errs, &at, v, 0)
            }
            "metrics" | "monitor_enabled" if !v.is_bool() => {
                errs.push(format!("{at}: expected true or false"))
            }
            k if EXISTING_KEYS.contains(&k) || NEW_KEYS.contains(&k) => {}
            _ => errs.push(format!("{at}: not a key of the configuration")),
        }
    }
    errs
}

#[test]
fn role_configs_use_only_keys_of_the_configuration() {
    let mut errs = Vec::new();
    for (rel, _) in role_files() {
        let cfg = parse(&rel, &read(&rel));
        errs.extend(contract_errors(&rel, &cfg));
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn the_contract_check_finds_unknown_keys_and_wrong_values() {
    let bad = r#"
roles = ["dialer", "billing"]
listen = "0.0.0.0"
colour = "blue"
[store]
url = "postgres://outcall:secret@db/outcall"
max_connections = 0
[bus]
kind = "kafka"
[rpc]
advertise = "10.0.0.5"
[ua]
sip_port = 5060
bind_address = "0.0.0.0"
[[trunks]]
name = "carrier"
host = "sip.carrier.example"
proxy = "10.0.0.2:5060"
[monitor]
interval = 15
"#;
    let errs = contract_errors("bad.toml", &parse("bad.toml", bad)).join("\n");
    for expected in [
        "roles: \"billing\" is not one of",
        "listen: `0.0.0.0` is not host:port",
        "colour: not a key of the configuration",
        "store.url: not a key of the configuration",
        "store.max_connections: expected an integer >= 1",
        "bus.kind: \"kafka\" is not local, rabbitmq or nats",
        "rpc.advertise: `10.0.0.5` is not host:port",
        "ua: unknown field `bind_address`",
        "trunks[0]: unknown field `proxy`",
        "monitor: unknown field `interval`",
    ] {
        assert!(
            errs.contains(expected),
            "`{expected}` not found in:\n{errs}"
        );
    }
    let good = "roles = [\"dialer\"]\n[ua]\nadvertise_ip = \"@POD_IP@\"\n";
    assert_eq!(
        contract_errors("good.toml", &parse("good.toml", good)),
        Vec::<String>::new()
    );
}

/// Key paths of a config (`store.url_file`, `trunks.host`, ...).
fn key_paths(t: &Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in t {
        let p = format!("{prefix}{k}");
        match v {
            Value::Table(t) => key_paths(t, &format!("{p}."), out),
            Value::Array(a) if a.iter().all(Value::is_table) && !a.is_empty() => {
                for t in a.iter().filter_map(Value::as_table) {
                    key_paths(t, &format!("{p}."), out);
                }
            }
            _ => {
                out.insert(p);
            }
        }
    }
}

fn get<'a>(t: &'a Table, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

#[test]
fn role_configs_agree_across_roles_and_with_kubernetes() {
    let mut errs = Vec::new();
    let mut store = BTreeSet::new();
    let mut bus = BTreeSet::new();
    for (rel, role) in role_files() {
        let cfg = parse(&rel, &read(&rel));
        let roles: Vec<_> = cfg
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if roles != [role] {
            errs.push(format!("{rel}: roles = {roles:?}, expected [{role:?}]"));
        }
        if get(&cfg, "listen").and_then(Value::as_str) != Some("0.0.0.0:8080") {
            errs.push(format!(
                "{rel}: listen is not 0.0.0.0:8080 (the probes' port)"
            ));
        }
        if get(&cfg, "data_dir").and_then(Value::as_str) != Some("/var/lib/outcall") {
            errs.push(format!(
                "{rel}: data_dir is not the image's volume /var/lib/outcall"
            ));
        }
        store.insert(get(&cfg, "store.url_file").map(Value::to_string));
        bus.insert((
            get(&cfg, "bus.kind").map(Value::to_string),
            get(&cfg, "bus.url_file").map(Value::to_string),
        ));
        let spool = get(&cfg, "bus.spool_dir").and_then(Value::as_str);
        match (role, spool) {
            ("dialer", Some(s)) if s.starts_with("/var/lib/outcall/") => {}
            ("dialer", _) => errs.push(format!(
                "{rel}: the dialer's spool_dir is not on its volume"
            )),
            (_, Some(_)) => errs.push(format!(
                "{rel}: spool_dir on a role that does not spool CDRs"
            )),
            _ => {}
        }
        let needs: &[&str] = match role {
            "dialer" => &[
                "redis.namespace",
                "rpc.listen",
                "ua.advertise_ip",
                "ua.sip_port",
                "trunks",
            ],
            "scheduler" | "monitor" | "api" => &["redis.namespace"],
            _ => &[],
        };
        for n in needs {
            if get(&cfg, n).is_none() {
                errs.push(format!("{rel}: the {role} role needs {n}"));
            }
        }
        if role == "dialer" {
            if get(&cfg, "ua.sip_port").and_then(Value::as_integer) != Some(5060) {
                errs.push(format!("{rel}: ua.sip_port is not 5060"));
            }
            if get(&cfg, "ua.advertise_ip").and_then(Value::as_str) != Some(POD_IP) {
                errs.push(format!(
                    "{rel}: ua.advertise_ip is not {POD_IP} (set per node)"
                ));
            }
        }
    }
    if store.len() != 1 || store.contains(&None) {
        errs.push(format!("the roles name different stores: {store:?}"));
    }
    if bus.len() != 1 {
        errs.push(format!("the roles name different buses: {bus:?}"));
    }
    // Compose and Kubernetes run each role with the same settings, except where the platform
    // differs: the Redis URL (a Secret in Kubernetes), the S3 endpoint (MinIO in compose) and the
    // carrier's route (Kamailio in compose).
    let platform = [
        "redis.url",
        "recordings.s3_endpoint",
        "trunks.outbound_proxy",
    ];
    for role in ROLES {
        let [c, k] = ["deploy/compose", "deploy/k8s/config"].map(|d| {
            let rel = format!("{d}/outcall-{role}.toml");
            let mut paths = BTreeSet::new();
            key_paths(&parse(&rel, &read(&rel)), "", &mut paths);
            paths.retain(|p| !platform.contains(&p.as_str()));
            paths
        });
        if c != k {
            errs.push(format!(
                "{role}: keys only in compose {:?}, only in Kubernetes {:?}",
                c.difference(&k).collect::<Vec<_>>(),
                k.difference(&c).collect::<Vec<_>>()
            ));
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// Dockerfile instructions: (stage index, instruction, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut stage = 0;
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if cur.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(part) = l.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(l);
        let (ins, args) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        let ins = ins.to_ascii_uppercase();
        if ins == "FROM" {
            stage += 1;
        }
        out.push((stage, ins, args.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_stripped_and_holds_no_secret() {
    let text = read("deploy/docker/Dockerfile");
    let ins = instructions(&text);
    let args: BTreeMap<_, _> = ins
        .iter()
        .filter(|(s, i, _)| *s == 0 && i == "ARG")
        .filter_map(|(_, _, a)| a.split_once('='))
        .collect();
    let froms: Vec<_> = ins.iter().filter(|(_, i, _)| i == "FROM").collect();
    let image = |a: &str| {
        let name = a.split_whitespace().next().unwrap_or("");
        let var = name.trim_start_matches("${").trim_end_matches('}');
        args.get(var).copied().unwrap_or(name).to_string()
    };
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert_eq!(image(&froms[0].2), "rust:1.95-bookworm");
    assert!(froms[0].2.ends_with("AS builder"), "{:?}", froms[0]);
    assert_eq!(image(&froms[1].2), "debian:bookworm-slim");

    let runs = |stage| -> Vec<&str> {
        ins.iter()
            .filter(|(s, i, _)| *s == stage && i == "RUN")
            .map(|(_, _, a)| a.as_str())
            .collect()
    };
    let build = runs(1).join("\n");
    assert!(
        build.contains("cargo build --release --locked -p outcall"),
        "{build}"
    );
    assert!(
        build.contains("--mount=type=cache,target=/usr/local/cargo/registry"),
        "{build}"
    );
    assert!(
        build.contains("--mount=type=cache,target=/src/target"),
        "{build}"
    );
    let env1: String = ins
        .iter()
        .filter(|(s, i, _)| *s == 1 && i == "ENV")
        .map(|(_, _, a)| a.as_str())
        .collect();
    assert!(
        env1.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"),
        "the binary is not stripped"
    );

    // The runtime stage: only ca-certificates from apt, only the binary from the builder.
    let rt = runs(2).join("\n");
    let installs: Vec<_> = rt
        .split("apt-get install")
        .skip(1)
        .flat_map(|s| s.split("&&").next().unwrap_or("").split_whitespace())
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(installs, ["ca-certificates"], "runtime packages");
    assert!(
        rt.contains("rm -rf /var/lib/apt/lists"),
        "apt lists left in the image"
    );
    let copies: Vec<_> = ins
        .iter()
        .filter(|(s, i, _)| *s == 2 && i == "COPY")
        .map(|(_, _, a)| a.as_str())
        .collect();
    assert_eq!(
        copies,
        ["--from=builder /out/outcall /usr/local/bin/outcall"]
    );

    let last = |name: &str| {
        ins.iter()
            .filter(|(s, i, _)| *s == 2 && i == name)
            .map(|(_, _, a)| a.as_str())
            .next_back()
    };
    let user = last("USER").expect("a USER in the runtime stage");
    assert!(
        !["root", "0", "0:0"].contains(&user) && user.starts_with("10001"),
        "USER {user}"
    );
    assert!(
        rt.contains("--uid 10001"),
        "no user with uid 10001 is created"
    );
    let expose: BTreeSet<_> = last("EXPOSE").unwrap_or("").split_whitespace().collect();
    for port in ["8080", "5060/udp", "5060/tcp", "7070"] {
        assert!(expose.contains(port), "EXPOSE lacks {port}: {expose:?}");
    }
    assert!(
        last("VOLUME").is_some_and(|v| v.contains("/var/lib/outcall")),
        "no data volume"
    );
    assert_eq!(last("ENTRYPOINT"), Some("[\"/usr/local/bin/outcall\"]"));
    assert!(
        last("CMD").is_some_and(|c| c.starts_with("[\"serve\"")),
        "CMD is not serve"
    );
    assert!(
        last("HEALTHCHECK").is_none(),
        "no HTTP client in the image for a HEALTHCHECK"
    );

    // No secret baked in: no credential-like ENV or ARG, nothing fetched with ADD.
    for (_, i, a) in &ins {
        let upper = a.to_ascii_uppercase();
        if i == "ENV" || i == "ARG" {
            for word in ["PASSWORD", "SECRET", "TOKEN", "API_KEY", "ACCESS_KEY"] {
                assert!(!upper.contains(word), "{i} {a}: a credential in the image");
            }
        }
        assert!(i != "ADD", "ADD {a}: use COPY");
    }
}

#[test]
fn secret_files_stay_out_of_the_image_and_of_git() {
    let ignore = read(".dockerignore");
    let lines: BTreeSet<_> = ignore.lines().map(str::trim).collect();
    for must in [
        "target",
        ".git",
        "deploy/compose/secrets",
        "deploy/k8s/secrets",
        "**/.env",
    ] {
        assert!(lines.contains(must), ".dockerignore lacks {must}");
    }
    for dir in ["deploy/compose/secrets", "deploy/k8s/secrets"] {
        let g = read(&format!("{dir}/.gitignore"));
        let rules: Vec<_> = g.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rules, ["*", "!.gitignore"], "{dir}/.gitignore");
    }
    // No credentials in any shipped deployment file: no `user:password@` in a URL (printf
    // templates aside), no literal `password =` in a TOML file.
    let mut errs = Vec::new();
    for dir in [
        "deploy/compose",
        "deploy/k8s",
        "deploy/kamailio",
        "deploy/docker",
    ] {
        let mut stack = vec![repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for (n, line) in text.lines().enumerate() {
                    let at = format!(
                        "{}:{}",
                        p.strip_prefix(repo()).unwrap_or(&p).display(),
                        n + 1
                    );
                    if let Some(i) = line.find("://") {
                        let rest = &line[i + 3..];
                        let auth = rest.split(['/', ' ', '"', '\'']).next().unwrap_or("");
                        if auth.contains('@') && auth.contains(':') && !auth.contains("%s") {
                            errs.push(format!("{at}: credentials in a URL"));
                        }
                    }
                    let t = line.trim_start();
                    if p.extension().is_some_and(|x| x == "toml") && t.starts_with("password ") {
                        errs.push(format!("{at}: a literal password"));
                    }
                }
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn kustomization_lists_files_that_exist() {
    let k = read("deploy/k8s/kustomization.yaml");
    let mut n = 0;
    for line in k.lines() {
        let t = line.trim();
        let file = if let Some(f) = t.strip_prefix("- ").filter(|f| f.ends_with(".yaml")) {
            Some(f.to_string())
        } else {
            t.strip_prefix("- outcall.toml=").map(str::to_string)
        };
        if let Some(f) = file {
            n += 1;
            assert!(
                repo().join("deploy/k8s").join(&f).is_file(),
                "kustomization.yaml: {f} is missing"
            );
        }
    }
    assert!(n >= 12, "only {n} files found in kustomization.yaml");
    for role in ROLES {
        assert!(
            k.contains(&format!("config/outcall-{role}.toml")),
            "no ConfigMap for {role}"
        );
    }
}
