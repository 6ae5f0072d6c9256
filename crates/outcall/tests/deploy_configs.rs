//! The node configs shipped in `deploy/` are read by the real config code: `outcall
//! check-config` on each of them (every key known, every value valid, each role's engines
//! named), and a wrong key is refused by name.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(file: &Path, env: &[(&str, &str)]) -> std::process::Output {
    // Dialers write their pod address into the file before starting; do the same.
    let text = std::fs::read_to_string(file)
        .unwrap()
        .replace("@POD_IP@", "10.0.0.5");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("outcall.toml");
    std::fs::write(&copy, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_outcall"))
        .args(["check-config", "--config"])
        .arg(&copy)
        .env_remove("OUTCALL_REDIS_URL")
        .env_remove("OUTCALL_BUS_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn tomls(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_node_config_is_valid_for_its_role() {
    let compose = tomls("deploy/compose");
    let k8s = tomls("deploy/k8s/config");
    assert_eq!(compose.len(), 5, "one config per role: {compose:?}");
    assert_eq!(k8s.len(), 5, "one config per role: {k8s:?}");
    for f in &compose {
        let out = check(f, &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let role = f
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("outcall-");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("roles {role}")),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The Kubernetes configs take Redis's URL from the Secret, through the environment.
    for f in &k8s {
        let out = check(f, &[("OUTCALL_REDIS_URL", "redis://redis:6379")]);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dialer = repo().join("deploy/k8s/config/outcall-dialer.toml");
    let out = check(&dialer, &[]);
    assert!(!out.status.success(), "a dialer without Redis is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("OUTCALL_REDIS_URL"));
}

#[test]
fn a_wrong_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("node.toml");
    std::fs::write(
        &f,
        "roles = [\"ingest\"]\n[bus]\nkind = \"nats\"\nurl = \"nats://n:4222\"\nspool = \"/x\"\n",
    )
    .unwrap();
    let out = check(&f, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spool"), "{err}");
    std::fs::write(&f, "roles = [\"dialler\"]\n").unwrap();
    let out = check(&f, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dialler"));
}
