"""Cluster factory: local GPU plan, SLURM job scripts, Kubernetes specs against the operator's CRDs."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from nclsm_scale.cluster import (
    gpu_task_resources,
    kube_cluster_spec,
    kube_gpu_worker_spec,
    local_worker_plan,
    open_client,
    slurm_cluster_kwargs,
    start_local_cluster,
)
from nclsm_scale.config import ClusterConfig, load_config
from nclsm_scale.errors import ConfigError


def _cluster(*presets: str, **dotted: object) -> ClusterConfig:
    return load_config(list(presets), {f"cluster.{k}": v for k, v in dotted.items()}).cluster


# --- local -------------------------------------------------------------------------------------


def test_local_plan_without_gpus_is_one_cpu_worker_per_core():
    plan = local_worker_plan([], 4, ClusterConfig())
    assert [w.name for w in plan] == ["cpu-0", "cpu-1", "cpu-2", "cpu-3"]
    assert all(w.resources == {} and w.env == {} and w.nthreads == 1 for w in plan)
    assert len(local_worker_plan([], 8, ClusterConfig(threads_per_worker=2))) == 4
    assert len(local_worker_plan([], 1, ClusterConfig(threads_per_worker=4))) == 1


def test_local_plan_gives_each_gpu_a_worker_and_hides_gpus_from_the_rest():
    plan = local_worker_plan(["0"], 4, ClusterConfig())
    gpu, *cpus = plan
    assert (gpu.name, gpu.resources, gpu.env) == ("gpu-0", {"GPU": 1}, {"CUDA_VISIBLE_DEVICES": "0"})
    assert len(cpus) == 3
    assert all(w.resources == {} and w.env == {"CUDA_VISIBLE_DEVICES": ""} for w in cpus)


def test_local_plan_keeps_inherited_device_ids_and_the_worker_total():
    plan = local_worker_plan(["2", "GPU-5f3a"], 16, ClusterConfig(n_workers=3, threads_per_worker=2))
    assert [(w.name, w.env["CUDA_VISIBLE_DEVICES"], w.nthreads) for w in plan] == [
        ("gpu-0", "2", 2), ("gpu-1", "GPU-5f3a", 2), ("cpu-0", "", 2)
    ]
    # fewer workers than GPUs: only as many GPUs are used
    assert [w.name for w in local_worker_plan(["0", "1"], 16, ClusterConfig(n_workers=1))] == ["gpu-0"]


def test_local_plan_honours_local_gpus():
    assert all(not w.resources for w in local_worker_plan(["0", "1"], 4, ClusterConfig(local_gpus=0)))
    assert [w.name for w in local_worker_plan(["0", "1"], 4, ClusterConfig(local_gpus=1))][:2] == [
        "gpu-0", "cpu-0"
    ]
    with pytest.raises(ConfigError, match="local_gpus=3 but torch sees 2"):
        local_worker_plan(["0", "1"], 4, ClusterConfig(local_gpus=3))


def test_local_cluster_pins_each_gpu_worker_to_its_device():
    """A planned GPU worker (device id given, no GPU needed) gets its env and GPU resource."""
    cfg = ClusterConfig()
    plan = local_worker_plan(["0"], 2, cfg)
    from distributed import Client

    with start_local_cluster(cfg, plan) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info()["workers"]
        by_name = {w["name"]: (addr, w) for addr, w in info.items()}
        assert by_name["gpu-0"][1]["resources"] == {"GPU": 1}
        assert by_name["cpu-0"][1]["resources"] == {}
        env = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert env[by_name["gpu-0"][0]] == "0"
        assert env[by_name["cpu-0"][0]] == ""
        limits = {w["memory_limit"] for w in info.values()}
        assert len(limits) == 1 and 0 < limits.pop() < 0.6 * sum(
            client.run(lambda: __import__("psutil").virtual_memory().total).values()
        )
        resources = gpu_task_resources(cfg, client)
        assert resources == {"GPU": 1}
        where = client.gather(client.map(lambda i: os.environ["CUDA_VISIBLE_DEVICES"], range(4),
                                         resources=resources))
        assert where == ["0"] * 4


def test_open_client_local_runs_and_closes():
    with open_client(ClusterConfig(n_workers=1), echo=False) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        assert len(client.scheduler_info()["workers"]) == 1
    assert client.status == "closed"


def test_gpu_task_resources_follows_config_then_workers(client):
    assert gpu_task_resources(ClusterConfig(), client) is None  # shared LocalCluster has no GPU
    assert gpu_task_resources(_cluster("slurm"), client) == {"GPU": 1}
    assert gpu_task_resources(_cluster("kubernetes"), client) == {"GPU": 1}
    assert gpu_task_resources(_cluster("slurm", **{"slurm.gpu": False}), client) is None


# --- configuration ----------------------------------------------------------------------------


def test_cluster_config_checks_at_load():
    assert _cluster(**{"slurm.walltime": 43200}).slurm.walltime == "12:00:00"  # YAML 12:00:00
    assert _cluster(**{"slurm.walltime": yaml.safe_load("1-00:00:00")}).slurm.walltime == "1-00:00:00"
    with pytest.raises(ConfigError, match="processes: 1"):
        _cluster(**{"slurm.gpu": True, "slurm.processes": 2})
    with pytest.raises(ConfigError, match="walltime"):
        _cluster(**{"slurm.walltime": "4h"})
    with pytest.raises(ConfigError, match=r"unknown key 'cluster.slurm.gpus'. Did you mean 'gpu'"):
        _cluster(**{"slurm.gpus": 1})
    # keys checked against each other can come from different sources (preset, then --set)
    assert _cluster("kubernetes", **{"kubernetes.max_workers": 0}).kubernetes.gpu_workers == 2
    assert _cluster("slurm", **{"slurm.lifetime_stagger_min": 8}).slurm.lifetime_margin_min == 10
    assert _cluster("slurm", **{"slurm.min_jobs": 12}).slurm.max_jobs == 16


def test_cluster_config_checks_at_start():
    with pytest.raises(ConfigError, match=r"min_jobs \(9\) must not exceed max_jobs \(8\)"):
        slurm_cluster_kwargs(_cluster(**{"slurm.min_jobs": 9}))
    with pytest.raises(ConfigError, match="lifetime_stagger_min"):
        slurm_cluster_kwargs(_cluster(**{"slurm.lifetime_stagger_min": 5}))
    with pytest.raises(ConfigError, match="leaves no time"):
        slurm_cluster_kwargs(_cluster(**{"slurm.walltime": "00:05:00"}))
    with pytest.raises(ConfigError, match="cluster.kubernetes.image is not set"):
        kube_cluster_spec(_cluster(kind="kubernetes"), "nclsm-test")
    with pytest.raises(ConfigError, match=r"min_workers \(5\) must not exceed max_workers \(4\)"):
        kube_gpu_worker_spec(_cluster("kubernetes", **{"kubernetes.min_workers": 5, "kubernetes.max_workers": 4}))
    with pytest.raises(ConfigError, match="max_workers >= 1 or gpu_workers >= 1"):
        kube_cluster_spec(_cluster("kubernetes", **{"kubernetes.max_workers": 0, "kubernetes.gpu_workers": 0}),
                          "nclsm-test")


# --- SLURM ------------------------------------------------------------------------------------


def test_slurm_kwargs_cpu_default():
    kw = slurm_cluster_kwargs(ClusterConfig(kind="slurm"))
    assert kw["cores"] == 8 and kw["processes"] == 1 and kw["memory"] == "64GB"
    assert kw["walltime"] == "04:00:00"
    assert kw["worker_extra_args"] == ["--lifetime", "235m", "--lifetime-stagger", "4m"]
    assert "job_extra_directives" not in kw and "queue" not in kw and "account" not in kw
    assert "job_script_prologue" not in kw and "python" not in kw  # left to jobqueue.yaml
    assert kw["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787"}


def test_slurm_kwargs_gpu_preset_with_overrides():
    cfg = _cluster("slurm", **{"slurm.account": "proj42", "slurm.gpu_directive": "--gpus=1",
                               "slurm.job_extra_directives": ["--constraint=a100"]})
    kw = slurm_cluster_kwargs(cfg)
    assert kw["queue"] == "gpu" and kw["account"] == "proj42"
    assert kw["job_extra_directives"] == ["--constraint=a100", "--gpus=1"]
    assert kw["worker_extra_args"][:2] == ["--resources", "GPU=1"]
    assert kw["worker_extra_args"][2:] == ["--lifetime", "470m", "--lifetime-stagger", "5m"]
    assert kw["job_script_prologue"] == ["module load cuda"]


def test_slurm_job_script_from_the_real_slurmcluster():
    jobqueue = pytest.importorskip("dask_jobqueue", reason="needs the slurm extra (dask-jobqueue)")
    cfg = _cluster("slurm", **{"slurm.account": "proj42", "slurm.walltime": "1-00:00:00",
                               "slurm.log_directory": "logs"})
    with jobqueue.SLURMCluster(**slurm_cluster_kwargs(cfg)) as cluster:
        script = cluster.job_script()
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for line in ("#SBATCH -J nclsm-worker", "#SBATCH -p gpu", "#SBATCH -A proj42", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=60G", "#SBATCH -t 1-00:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH -o logs/nclsm-worker-%J.out"):
        assert line in header, (line, header)
    assert "module load cuda" in script
    command = script.splitlines()[-1]
    for part in ("--nthreads 8", "--resources GPU=1", "--lifetime 1430m", "--lifetime-stagger 5m",
                 "--local-directory ${TMPDIR:-/tmp}", f"{sys.executable} -m distributed.cli.dask_worker"):
        assert part in command, (part, command)


def test_slurm_cpu_job_script_requests_no_gpu():
    jobqueue = pytest.importorskip("dask_jobqueue", reason="needs the slurm extra (dask-jobqueue)")
    cfg = _cluster(**{"slurm.cores": 16, "slurm.processes": 4, "slurm.memory": "32GB"})
    with jobqueue.SLURMCluster(**slurm_cluster_kwargs(cfg)) as cluster:
        script = cluster.job_script()
    assert "gres" not in script and "GPU" not in script
    assert "--nworkers 4" in script and "--nthreads 4" in script and "--cpus-per-task=16" in script


_FAKE_SBATCH = """\
#!/usr/bin/env bash
# Stand-in for SLURM's sbatch on a machine without SLURM: keep a copy of the job script (as
# sbatch does) and run it here, detached, in its own process group.
cp "$1" "{log}/job-$$.sh"
setsid bash "{log}/job-$$.sh" > "{log}/job-$$.log" 2>&1 < /dev/null &
echo "$!" >> "{log}/pids"
echo "Submitted batch job $!"
"""
_FAKE_SCANCEL = """\
#!/usr/bin/env bash
kill -TERM -- "-$1" 2>/dev/null || true
"""


def test_open_client_slurm_end_to_end_with_a_stand_in_sbatch(tmp_path, monkeypatch):
    """open_client(kind=slurm) submits real job scripts; a local sbatch runs them, scancel kills them."""
    pytest.importorskip("dask_jobqueue", reason="needs the slurm extra (dask-jobqueue)")
    if shutil.which("sbatch"):
        pytest.skip("a real sbatch is on PATH; not submitting test jobs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", _FAKE_SBATCH.format(log=tmp_path)), ("scancel", _FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = _cluster("slurm", **{"slurm.cores": 1, "slurm.memory": "2GB", "slurm.max_jobs": 1,
                               "slurm.job_script_prologue": [], "slurm.walltime": "00:30:00"})
    with open_client(cfg, echo=False) as client:
        resources = gpu_task_resources(cfg, client)
        assert resources == {"GPU": 1}
        # adaptive: no job until work is queued, then one job whose worker offers GPU=1
        future = client.submit(lambda: os.environ.get("SLURM_JOB_ID", "none"), resources=resources)
        assert future.result(timeout=120) == "none"
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["resources"] == {"GPU": 1} and worker["nthreads"] == 1
        pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pids[0]):
        time.sleep(0.5)
    assert not _alive(pids[0]), "closing the cluster did not scancel the worker job"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_open_client_slurm_needs_sbatch(monkeypatch, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="needs the slurm extra (dask-jobqueue)")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="'sbatch' is not on PATH"):
        with open_client(_cluster("slurm"), echo=False):
            pass


def test_missing_extra_names_the_pip_command(monkeypatch):
    # None in sys.modules makes the import fail as for a package that is not installed.
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ConfigError, match=r"pip install 'nclsm-scale\[slurm\]'"):
        with open_client(_cluster("slurm"), echo=False):
            pass
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ConfigError, match=r"pip install 'nclsm-scale\[k8s\]'"):
        kube_cluster_spec(_cluster("kubernetes"), "nclsm-test")


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_validators():
    """JSON-schema validators of the DaskCluster / DaskWorkerGroup CRDs shipped with dask-kubernetes."""
    dk = pytest.importorskip("dask_kubernetes", reason="needs the k8s extra (dask-kubernetes)")
    jsonschema = pytest.importorskip("jsonschema", reason="needs jsonschema")
    crds = Path(dk.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
    out = {}
    for kind, file in (("DaskCluster", "daskcluster.yaml"), ("DaskWorkerGroup", "daskworkergroup.yaml")):
        crd = yaml.safe_load((crds / file).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])
    return out


def _worker_group(cluster_name: str, worker: dict) -> dict:
    # the body KubeCluster.add_worker_group creates around a custom worker spec
    return {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup",
            "metadata": {"name": f"{cluster_name}-gpu"}, "spec": {"cluster": cluster_name, "worker": worker}}


def _errors(validator, body: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


KUBE_CASES = {
    "preset": (("kubernetes",), {}),
    "gpu-only-amd": (("kubernetes",), {"kubernetes.max_workers": 0,
                                      "kubernetes.gpu_resource": "amd.com/gpu",
                                      "kubernetes.gpu_node_selector": {"gpu": "mi300"}}),
    "cpu-only": ((), {"kind": "kubernetes", "kubernetes.image": "registry.local/nclsm:cpu",
                      "kubernetes.env": {"OMP_NUM_THREADS": "4"}, "kubernetes.min_workers": 2}),
}


@pytest.mark.parametrize("case", sorted(KUBE_CASES))
def test_kube_specs_validate_against_the_operator_crds(case, crd_validators):
    presets, dotted = KUBE_CASES[case]
    cfg = _cluster(*presets, **dotted)
    k = cfg.kubernetes
    spec = kube_cluster_spec(cfg, "nclsm-test1234")
    assert _errors(crd_validators["DaskCluster"], spec) == []
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    # the pitfall: no GPU on the scheduler (nor on the CPU worker group)
    for container in (scheduler, worker):
        assert not any("gpu" in key for part in container["resources"].values() for key in part)
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert scheduler["resources"]["requests"] == {"cpu": k.scheduler_cpu, "memory": k.scheduler_memory}
    assert worker["args"][:2] == ["dask", "worker"] and "--resources" not in worker["args"]
    assert worker["args"][-2:] == ["--nthreads", str(k.worker_cores)]
    assert spec["spec"]["worker"]["replicas"] == k.min_workers
    assert scheduler["image"] == worker["image"] == k.image
    assert worker["env"] == [{"name": n, "value": v} for n, v in sorted(k.env.items())]

    group = kube_gpu_worker_spec(cfg)
    assert _errors(crd_validators["DaskWorkerGroup"], _worker_group("nclsm-test1234", group)) == []
    pod = group["spec"]
    (gpu_worker,) = pod["containers"]
    assert group["replicas"] == k.gpu_workers
    assert gpu_worker["resources"]["limits"] == {"memory": k.worker_memory, k.gpu_resource: "1"}
    assert gpu_worker["args"][:2] == ["dask", "worker"]
    assert gpu_worker["args"][-2:] == ["--resources", "GPU=1"]
    assert pod["tolerations"] == [{"key": k.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    assert pod.get("nodeSelector", {}) == k.gpu_node_selector


def test_crd_validation_catches_a_broken_spec(crd_validators):
    spec = kube_cluster_spec(_cluster("kubernetes"), "nclsm-test1234")
    spec["spec"]["worker"]["replicas"] = "four"
    spec["spec"]["scheduler"]["spec"]["containers"][0]["env"] = None
    errors = _errors(crd_validators["DaskCluster"], spec)
    assert any("replicas" in e for e in errors) and any("env" in e for e in errors)


def test_open_client_kubernetes_without_credentials(monkeypatch, tmp_path):
    pytest.importorskip("dask_kubernetes.operator", reason="needs the k8s extra (dask-kubernetes)")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="cannot reach Kubernetes"):
        with open_client(_cluster("kubernetes"), echo=False):
            pass


# --- command line -----------------------------------------------------------------------------


def test_info_with_cluster_presets(run_cli):
    for preset in ("slurm", "kubernetes"):
        done = run_cli("info", "--config", preset, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"cluster: {preset}" in done.stdout
        assert "presets:" in done.stdout and "slurm" in done.stdout


# --- dashboard address, monitoring URLs, shutdown ------------------------------------------------


def test_a_taken_dashboard_port_falls_back_to_a_free_one(caplog):
    import logging
    import socket

    from nclsm_scale.cluster import free_dashboard_address

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="nclsm_scale.cluster"):
            assert free_dashboard_address(f"127.0.0.1:{port}") == "127.0.0.1:0"
        assert f"dashboard port {port} on 127.0.0.1 is taken" in caplog.text
    assert free_dashboard_address(f"127.0.0.1:{port}") == f"127.0.0.1:{port}"  # released: free again
    assert free_dashboard_address(":0") == ":0"
    assert ClusterConfig().dashboard_address == "127.0.0.1:8787"


def test_monitoring_urls_sit_beside_the_dashboard():
    from types import SimpleNamespace

    from nclsm_scale.cluster import monitoring_urls

    client = SimpleNamespace(dashboard_link="http://127.0.0.1:8787/status")
    assert monitoring_urls(client) == {"dashboard": "http://127.0.0.1:8787/status",  # type: ignore[arg-type]
                                       "metrics": "http://127.0.0.1:8787/metrics"}


def _slow_exit(seconds: float) -> int:
    """Make this worker process spend ``seconds`` in interpreter teardown, as torch's finalisers do under load."""
    import atexit

    import torch

    atexit.register(time.sleep, seconds)
    return int(torch.zeros(2).sum().item())


@pytest.mark.parametrize(("close_timeout_s", "killed"), [(30.0, False), (5.0, True)])
def test_a_local_cluster_lets_slow_exiting_workers_exit(caplog, close_timeout_s, killed):
    """A worker taking 6 s to exit exits by itself; with the nanny's default 5 s (4 s, then SIGKILL) it is killed."""
    import logging

    cfg = ClusterConfig(n_workers=1, local_gpus=0, dashboard_address="127.0.0.1:0", close_timeout_s=close_timeout_s)
    with caplog.at_level(logging.INFO, logger="distributed.nanny"):
        with open_client(cfg, echo=False) as client:
            assert client.submit(_slow_exit, 6.0, pure=False).result() == 0
            t0 = time.monotonic()
    seconds = time.monotonic() - t0
    print(f"close_timeout_s={close_timeout_s}: closing took {seconds:.1f} s")
    assert ("Worker process still alive after 4.0 seconds, killing" in caplog.text) is killed, caplog.text
    assert seconds >= (4.0 if killed else 6.0)
