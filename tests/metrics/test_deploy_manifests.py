"""deploy/: the compose file and the Kubernetes manifests, checked offline.

Kubernetes objects are validated against Kubernetes' own schemas (kubernetes-validate,
strict: unknown fields fail); the RayCluster against the vendored ray.io/v1 CRD schema
(deploy/k8s/schemas/), made strict the same way, with its pod templates validated as
core/v1 PodTemplates. Nothing is fetched.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31.0"


@pytest.fixture(scope="module")
def kv():
    try:
        import kubernetes_validate
    except ImportError as exc:
        msg = f"kubernetes-validate is not installed ({exc})"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return kubernetes_validate


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def by_kind(kind: str) -> dict:
    (obj,) = [d for f in K8S.glob("*.yaml") if f.name != "kustomization.yaml" for d in docs(f.name)
              if d["kind"] == kind and d["metadata"]["name"] not in ("fairgpu-ray-auth", "fairgpu-scrape-token")]
    return obj


def strict(schema: dict) -> dict:
    """Unknown fields fail, as with kubectl's default server-side field validation."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def raycluster_validator():
    import jsonschema

    schema = json.loads((K8S / "schemas" / "raycluster_v1.schema.json").read_text())
    return jsonschema.Draft7Validator(strict(schema))


def validate_raycluster(kv, obj: dict) -> None:
    errors = sorted(raycluster_validator().iter_errors(obj), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    templates = [obj["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in obj["spec"]["workerGroupSpecs"]]
    for t in templates:
        kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": t},
                    K8S_VERSION, strict=True)


# ---- Kubernetes ----------------------------------------------------------------------------

def test_builtin_kinds_validate_against_kubernetes_schemas(kv):
    seen = []
    for f in sorted(K8S.glob("*.yaml")):
        for d in docs(f.name):
            if d.get("apiVersion", "").split("/")[0] in ("ray.io", "monitoring.coreos.com",
                                                         "kustomize.config.k8s.io"):
                continue
            kv.validate(d, K8S_VERSION, strict=True)
            seen.append(d["kind"])
    assert sorted(seen) == ["Deployment", "Namespace", "PersistentVolumeClaim", "Secret", "Secret", "Secret",
                            "Service"]


def test_raycluster_validates_against_the_crd_schema(kv):
    validate_raycluster(kv, by_kind("RayCluster"))


@pytest.mark.parametrize("breakage", ["typo", "missing group name", "string replicas", "bad container field"])
def test_the_validators_reject_broken_manifests(kv, breakage):
    import jsonschema
    from kubernetes_validate import ValidationError

    rc = by_kind("RayCluster")
    worker = rc["spec"]["workerGroupSpecs"][0]
    if breakage == "typo":
        rc["spec"]["headGroupSpec"]["rayStartParam"] = rc["spec"]["headGroupSpec"].pop("rayStartParams")
    elif breakage == "missing group name":
        del worker["groupName"]
    elif breakage == "string replicas":
        worker["replicas"] = "2"
    else:
        worker["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises((AssertionError, jsonschema.ValidationError, ValidationError)):
        validate_raycluster(kv, rc)


def test_t4_worker_group_asks_for_what_ray_is_told():
    rc = by_kind("RayCluster")
    assert rc["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (worker,) = rc["spec"]["workerGroupSpecs"]
    params = worker["rayStartParams"]
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == params["num-gpus"] == "1"
    assert json.loads(json.loads(params["resources"])) == {"accelerator_type:T4": 1}
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "Tesla-T4"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def all_pods(rc: dict | None = None) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod the manifests make: the server's and each Ray group's."""
    rc, dep = rc or by_kind("RayCluster"), by_kind("Deployment")
    return [("server", dep["spec"]["template"]["spec"]), ("ray head", rc["spec"]["headGroupSpec"]["template"]["spec"]),
            *[(f"worker group {g['groupName']}", g["template"]["spec"]) for g in rc["spec"]["workerGroupSpecs"]]]


def sandbox_problems(rc: dict) -> list[str]:
    """Why a GPU worker could not start the script sandbox, or would be privileged."""
    bad = []
    for where, pod in all_pods(rc):
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("privileged") or sc.get("capabilities", {}).get("add"):
                bad.append(f"{where}: privileged or with capabilities added")
            if sc.get("procMount", "Default") != "Default" and pod.get("hostUsers") is not False:
                bad.append(f"{where}: an unmasked /proc needs hostUsers: false (the API server refuses it)")
        if any(pod.get(k) for k in ("hostPID", "hostIPC", "hostNetwork")):
            bad.append(f"{where}: shares a host namespace")
        if not where.startswith("worker"):
            continue
        (c,) = pod["containers"]
        sc = c.get("securityContext", {})
        wanted = {"a user namespace of its own (hostUsers: false)": pod.get("hostUsers") is False,
                  "no root": pod.get("securityContext", {}).get("runAsNonRoot") is True,
                  "procMount: Unmasked": sc.get("procMount") == "Unmasked",
                  "seccomp that lets clone/unshare/mount through":
                      sc.get("seccompProfile", {}).get("type") in ("Unconfined", "Localhost"),
                  "AppArmor that lets mount through": sc.get("appArmorProfile", {}).get("type") in ("Unconfined",
                                                                                                    "Localhost"),
                  "privileged: false": sc.get("privileged") is False,
                  "allowPrivilegeEscalation: false": sc.get("allowPrivilegeEscalation") is False,
                  "every capability dropped": sc.get("capabilities") == {"drop": ["ALL"]}}
        bad += [f"{where}: needs {what}" for what, ok in wanted.items() if not ok]
    return bad


def test_gpu_workers_can_start_the_script_sandbox_without_privilege():
    """Scripts run on the GPU workers, each in bubblewrap (scheduler/runtime/sandbox.py), which needs
    user namespaces, mount and a fresh /proc: the pod in a user namespace of its own,
    /proc unmasked, seccomp and AppArmor that let clone/unshare/mount through. Never
    privileged: no capability added, no privilege escalation, no root."""
    rc = by_kind("RayCluster")
    assert rc["spec"]["workerGroupSpecs"]
    assert sandbox_problems(rc) == []


@pytest.mark.parametrize("breakage,problem", [
    ("hostUsers", "an unmasked /proc needs hostUsers: false"),
    ("procMount", "needs procMount: Unmasked"),
    ("seccompProfile", "needs seccomp"),
    ("privileged", "privileged or with capabilities added"),
])
def test_the_sandbox_check_catches_a_broken_worker(breakage, problem):
    rc = by_kind("RayCluster")
    pod = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    if breakage == "hostUsers":
        del pod["hostUsers"]
    elif breakage == "privileged":
        sc["capabilities"]["add"] = ["SYS_ADMIN"]
    elif breakage == "seccompProfile":
        sc["seccompProfile"] = {"type": "RuntimeDefault"}
    else:
        del sc[breakage]
    assert any(problem in p for p in sandbox_problems(rc)), sandbox_problems(rc)


def env_of(container) -> dict:
    return {e["name"]: e for e in container["env"]}


def test_server_points_at_the_ray_head_and_builds_its_db_url_from_the_secret():
    rc, dep, secret = by_kind("RayCluster"), by_kind("Deployment"), by_kind("Secret")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = dict(a.split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
    assert "--standby" in c["args"]  # a replacement pod waits for the old lease instead of exiting
    assert args["--ray-address"] == f"ray://{rc['metadata']['name']}-head-svc:10001"  # KubeRay's head service
    head_ports = {p["name"]: p["containerPort"] for p in rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports["client"] == 10001
    env = env_of(c)
    refs = re.findall(r"\$\((\w+)\)", env["FAIRGPU_DB"]["value"])
    assert env["FAIRGPU_DB"]["value"].startswith("postgresql+psycopg://") and len(refs) == 4
    names = list(env)
    for ref in refs:  # Kubernetes expands $(VAR) only from variables defined earlier
        assert names.index(ref) < names.index("FAIRGPU_DB")
        key = env[ref]["valueFrom"]["secretKeyRef"]
        assert key["name"] == secret["metadata"]["name"] and key["key"] in secret["stringData"]
    assert "value" not in env["POSTGRES_PASSWORD"]  # never inline


def test_every_ray_process_and_the_server_share_the_ray_token():
    rc, dep = by_kind("RayCluster"), by_kind("Deployment")
    containers = [rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0],
                  *[g["template"]["spec"]["containers"][0] for g in rc["spec"]["workerGroupSpecs"]],
                  dep["spec"]["template"]["spec"]["containers"][0]]
    for c in containers:
        env = env_of(c)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "fairgpu-ray-auth"


def test_service_monitor_scrapes_the_service_like_the_prometheus_config():
    sm, svc, dep = by_kind("ServiceMonitor"), by_kind("Service"), by_kind("Deployment")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["path"] == "/metrics"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "fairgpu")
    snake = [{re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in r.items()}
             for r in ep["metricRelabelings"]]
    assert snake == job["metric_relabel_configs"]


def test_kustomization_lists_the_manifests():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / r).is_file() for r in k["resources"])
    listed = set(k["resources"]) | {"kustomization.yaml", "secrets.example.yaml"}
    assert {f.name for f in K8S.glob("*.yaml")} == listed


# ---- compose -------------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_mounts_only_files_that_exist_and_declares_its_volumes():
    c = compose()
    assert set(c["services"]) == {"fairgpu", "prometheus", "grafana"}
    for name, svc in c["services"].items():
        assert "image" in svc, name
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, mount)
            else:
                assert source in c["volumes"], (name, mount)
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # loopback unless the admin opens it
    build = c["services"]["fairgpu"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_compose_wires_prometheus_and_grafana_to_each_other():
    c = compose()
    port = next(a.split("=", 1)[1] for a in c["services"]["fairgpu"]["command"] if a.startswith("--port="))
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "fairgpu")
    assert job["static_configs"][0]["targets"] == [f"fairgpu:{port}"]
    mounts = dict(m.split(":")[:2] for m in c["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus/alerts.yml"] in prom["rule_files"]
    assert mounts["./prometheus/prometheus.yml"] in " ".join(c["services"]["prometheus"]["command"])
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in c["services"]["prometheus"]["ports"]


def test_server_and_every_ray_pod_share_the_state_volume():
    """Results and fences live in the state directory: on a cluster it must be one
    ReadWriteMany volume mounted at the server's --state-dir in every pod."""
    pvc = by_kind("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    dep = by_kind("Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    state_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--state-dir="))
    rc = by_kind("RayCluster")
    pods = [dep["spec"]["template"]["spec"], rc["spec"]["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in rc["spec"]["workerGroupSpecs"]]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert claims.get(mounts.get(state_dir)) == pvc["metadata"]["name"], pod["containers"][0]["name"]


# ---- the image ---------------------------------------------------------------------------

def dockerfile_lines() -> list[str]:
    """deploy/Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def image_extras() -> list[str]:
    (arg,) = [ln for ln in dockerfile_lines() if ln.startswith("ARG EXTRAS=")]
    return arg.split("=", 1)[1].split(",")


def pyproject_extras() -> dict[str, list[str]]:
    import tomllib

    return tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_image_ships_both_frameworks_with_their_cuda_builds():
    """TensorFlow jobs must run in the shipped image too, and on GPUs: tensorflow[and-cuda],
    not the CPU-only build, at the version the tests run (the `tensorflow` extra's)."""
    extras = pyproject_extras()
    assert image_extras() == ["torch", "tensorflow-cuda"]
    assert all(e in extras for e in image_extras())
    assert 'RUN pip install ".[server,${EXTRAS}]"' in dockerfile_lines() and "server" in extras
    cpu_tf = extras["tensorflow"][0].split("==")[1]
    assert extras["tensorflow-cuda"] == [f"tensorflow[and-cuda]=={cpu_tf}"]
    assert [t for t in extras["torch"] if t.startswith("torch==")]  # PyPI's Linux wheel brings CUDA


def test_the_build_fails_unless_each_framework_it_asked_for_imports():
    """The image's own check, run here with this environment: it maps every framework
    extra and passes where both frameworks are installed."""
    (run,) = [ln for ln in dockerfile_lines() if "installed_frameworks" in ln]
    code = re.fullmatch(r'RUN python -c "(.*)"', run).group(1).replace("${EXTRAS}", ",".join(image_extras()))
    framework_extras = {e for e in pyproject_extras() if e in ("torch",) or e.startswith("tensorflow")}
    assert {k for k in re.findall(r"'([\w-]+)': '(?:pytorch|tensorflow)'", code)} == framework_extras
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=DEPLOY.parent, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["frameworks:", "pytorch", "tensorflow"]
