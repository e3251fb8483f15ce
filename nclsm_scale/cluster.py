"""The one place a Dask client is created, and the one way work is sent to it.

:func:`open_client` turns a :class:`~nclsm_scale.config.ClusterConfig` into a
connected :class:`distributed.Client`; stage drivers receive that client and send
their block tasks with :func:`fan_out` (retries, resources, progress, the first
error re-raised, results gathered). ``cluster.kind`` picks where the workers run:

``local``
    Worker processes on this machine. Each CUDA device torch sees gets a worker of
    its own (``CUDA_VISIBLE_DEVICES`` set to that device, Dask resource ``GPU=1``);
    the remaining workers are CPU-only and see no GPU (:func:`local_worker_plan`).
``address``
    An already running scheduler (``--scheduler tcp://host:8786``).
``slurm``
    dask-jobqueue ``SLURMCluster``: one batch job per worker, adaptive between
    ``min_jobs`` and ``max_jobs`` (:func:`slurm_cluster_kwargs`).
``kubernetes``
    The Dask Kubernetes operator's ``KubeCluster``: a CPU-only scheduler, an adaptive
    CPU worker group and an optional fixed GPU worker group
    (:func:`kube_cluster_spec`, :func:`kube_gpu_worker_spec`).

The scheduler's dashboard binds ``cluster.dashboard_address`` (default
``127.0.0.1:8787``: this machine only, the port Dask documents), or a free port when
that one is taken; the scheduler also serves Prometheus metrics at ``/metrics``
beside it (:func:`monitoring_urls`). A local cluster closes its worker processes
itself before the cluster, giving each ``cluster.close_timeout_s`` to exit
(:func:`close_local_workers`).

The builders are pure functions of the config, so they are tested without a
cluster; the extras (``nclsm-scale[slurm]``, ``nclsm-scale[k8s]``) are imported only
when their kind is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from nclsm_scale.config import ClusterConfig, KubernetesConfig
from nclsm_scale.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client, Future

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Path of the scheduler's Prometheus endpoint, beside its dashboard.
METRICS_PATH = "/metrics"
#: Extra that provides each optional cluster module.
_EXTRAS = {"dask_jobqueue": "slurm", "dask_kubernetes.operator": "k8s"}


@dataclass(frozen=True)
class LocalWorker:
    """One worker process of a local cluster.

    Attributes
    ----------
    name : str
        Worker name (``gpu-0``, ``cpu-0``, ...).
    nthreads : int
        Threads of the worker.
    resources : dict of str to int
        Abstract Dask resources (``{"GPU": 1}`` on a GPU worker).
    env : dict of str to str
        Environment of the worker process (``CUDA_VISIBLE_DEVICES``).
    """

    name: str
    nthreads: int
    resources: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def visible_gpu_ids() -> list[str]:
    """CUDA device ids torch can use, as ``CUDA_VISIBLE_DEVICES`` entries ("0", "1", or UUIDs)."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    inherited = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    inherited = [d for d in inherited if d]
    return inherited[:count] if inherited else [str(i) for i in range(count)]


def local_worker_plan(
    gpu_ids: Sequence[str], cpu_count: int, cfg: ClusterConfig
) -> list[LocalWorker]:
    """Decide the workers of a local cluster.

    The cluster has ``cfg.n_workers`` workers (default: ``cpu_count //
    threads_per_worker``, at least one). The first of them own one GPU each
    (``cfg.local_gpus`` of ``gpu_ids``, all by default): ``CUDA_VISIBLE_DEVICES`` is
    that device and the worker offers the Dask resource ``GPU=1``, so tasks tagged
    ``resources={"GPU": 1}`` run one at a time per device. When there are GPU
    workers the others get ``CUDA_VISIBLE_DEVICES=""`` so they never open a CUDA
    context.

    Parameters
    ----------
    gpu_ids : sequence of str
        Devices available (:func:`visible_gpu_ids`).
    cpu_count : int
        CPU cores of the machine.
    cfg : ClusterConfig

    Returns
    -------
    list of LocalWorker

    Raises
    ------
    ConfigError
        When ``cfg.local_gpus`` asks for more GPUs than there are.

    >>> [w.name for w in local_worker_plan(["0"], 4, ClusterConfig())]
    ['gpu-0', 'cpu-0', 'cpu-1', 'cpu-2']
    """
    if cfg.local_gpus is not None and cfg.local_gpus > len(gpu_ids):
        raise ConfigError(
            f"cluster.local_gpus={cfg.local_gpus} but torch sees {len(gpu_ids)} CUDA device(s); "
            "use a smaller number or leave it unset (null) to use every device."
        )
    total = cfg.n_workers or max(1, cpu_count // cfg.threads_per_worker)
    wanted = len(gpu_ids) if cfg.local_gpus is None else cfg.local_gpus
    gpus = list(gpu_ids)[: min(wanted, total)]
    workers = [
        LocalWorker(f"gpu-{i}", cfg.threads_per_worker, {"GPU": 1}, {"CUDA_VISIBLE_DEVICES": dev})
        for i, dev in enumerate(gpus)
    ]
    hide = {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}
    workers += [
        LocalWorker(f"cpu-{i}", cfg.threads_per_worker, {}, dict(hide))
        for i in range(total - len(gpus))
    ]
    return workers


def walltime_minutes(walltime: str) -> int:
    """Whole minutes (seconds dropped) in a SLURM walltime ``[D-]HH:MM:SS``.

    >>> walltime_minutes("1-02:30:00")
    1590
    """
    days, _, clock = walltime.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds // 60


def slurm_cluster_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments of dask-jobqueue's ``SLURMCluster`` for ``cfg.slurm``.

    One job runs ``processes`` worker processes with ``cores / processes`` threads
    each. With ``gpu`` the job asks for one GPU (``gpu_directive``) and its single
    worker offers the Dask resource ``GPU=1``. Workers retire
    ``lifetime_margin_min`` minutes before the walltime (spread by
    ``lifetime_stagger_min``) so adaptive scaling replaces them before SLURM kills
    the job. Keys left ``None`` are omitted: dask-jobqueue then reads them from its
    own configuration (``jobqueue.slurm`` in ``jobqueue.yaml``).

    Raises
    ------
    ConfigError
        When ``cfg.slurm`` contradicts itself (job bounds, lifetime margins).

    >>> slurm_cluster_kwargs(ClusterConfig())["worker_extra_args"]
    ['--lifetime', '235m', '--lifetime-stagger', '4m']
    """
    s = cfg.slurm
    _check_bounds("cluster.slurm", "min_jobs", s.min_jobs, "max_jobs", s.max_jobs)
    if s.lifetime_stagger_min >= s.lifetime_margin_min:
        raise ConfigError(
            f"cluster.slurm.lifetime_stagger_min ({s.lifetime_stagger_min}) must be below "
            f"lifetime_margin_min ({s.lifetime_margin_min}) so workers retire before the walltime."
        )
    lifetime_min = walltime_minutes(s.walltime) - s.lifetime_margin_min
    if lifetime_min < 1:
        raise ConfigError(
            f"cluster.slurm.walltime {s.walltime} leaves no time before the "
            f"{s.lifetime_margin_min}-minute retirement margin (lifetime_margin_min)."
        )
    stagger_min = s.lifetime_stagger_min
    worker_args = ["--lifetime", f"{lifetime_min}m", "--lifetime-stagger", f"{stagger_min}m"]
    directives = list(s.job_extra_directives)
    if s.gpu:
        worker_args = ["--resources", "GPU=1", *worker_args]
        directives.append(s.gpu_directive)
    kwargs: dict[str, Any] = {
        "queue": s.queue,
        "account": s.account,
        "walltime": s.walltime,
        "cores": s.cores,
        "processes": s.processes,
        "memory": s.memory,
        "job_name": s.job_name,
        "job_extra_directives": directives or None,
        "worker_extra_args": worker_args,
        "local_directory": s.local_directory,
        "job_script_prologue": list(s.job_script_prologue) or None,
        "python": s.python,
        "interface": s.interface,
        "log_directory": s.log_directory,
        "scheduler_options": {"dashboard_address": cfg.dashboard_address},
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def _check_bounds(section: str, low_key: str, low: int, high_key: str, high: int) -> None:
    if low > high:
        raise ConfigError(f"{section}.{low_key} ({low}) must not exceed {high_key} ({high}).")


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS[module]
        raise ConfigError(
            f"this cluster kind needs the '{extra}' extra: pip install 'nclsm-scale[{extra}]' "
            f"({exc})"
        ) from None


def _quantities(
    cpu: str, memory: str, extra: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Container resources: CPU and memory requested, memory (and ``extra``) limited."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"memory": memory, **(extra or {})},
    }


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _checked_kubernetes(cfg: ClusterConfig) -> KubernetesConfig:
    k = cfg.kubernetes
    if not k.image:
        raise ConfigError(
            "cluster.kubernetes.image is not set: give the image built from deploy/docker, "
            "with nclsm-scale and this machine's dask/distributed versions."
        )
    _check_bounds("cluster.kubernetes", "min_workers", k.min_workers, "max_workers", k.max_workers)
    if k.max_workers == 0 and k.gpu_workers == 0:
        raise ConfigError("cluster.kubernetes needs max_workers >= 1 or gpu_workers >= 1.")
    return k


def kube_cluster_spec(cfg: ClusterConfig, name: str) -> dict[str, Any]:
    """``DaskCluster`` resource for ``cfg.kubernetes``: CPU-only scheduler and default worker group.

    Built with ``dask_kubernetes.operator.make_cluster_spec`` and then corrected:
    the scheduler and workers start with ``dask scheduler`` / ``dask worker`` (the
    ``dask-scheduler`` script is gone from current distributed), every container
    gets CPU and memory requests, and no GPU is requested here at all (GPU workers
    are a separate group, :func:`kube_gpu_worker_spec`).

    Parameters
    ----------
    cfg : ClusterConfig
    name : str
        ``metadata.name`` of the DaskCluster.

    Raises
    ------
    ConfigError
        When no image is set, or the worker counts contradict each other or give no
        worker at all.
    """
    k = _checked_kubernetes(cfg)
    operator = _require("dask_kubernetes.operator")
    spec = operator.make_cluster_spec(
        name=name,
        image=k.image,
        n_workers=k.min_workers,
        env=_env_list(k.env),
        worker_command=["dask", "worker"],
    )
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    scheduler["resources"] = _quantities(k.scheduler_cpu, k.scheduler_memory)
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    worker["args"] += ["--nthreads", str(k.worker_cores)]
    worker["resources"] = _quantities(str(k.worker_cores), k.worker_memory)
    return spec


def kube_gpu_worker_spec(cfg: ClusterConfig) -> dict[str, Any]:
    """Worker spec of the ``gpu`` ``DaskWorkerGroup``: ``gpu_workers`` pods with one GPU each.

    Each pod's container has the GPU limit (``gpu_resource``) and runs ``dask worker
    --resources GPU=1``; the pod tolerates the usual ``<gpu_resource>:NoSchedule``
    taint of GPU nodes and follows ``gpu_node_selector``.
    """
    k = _checked_kubernetes(cfg)
    operator = _require("dask_kubernetes.operator")
    spec = operator.make_worker_spec(
        image=k.image,
        n_workers=k.gpu_workers,
        env=_env_list(k.env),
        worker_command=["dask", "worker"],
    )
    pod = spec["spec"]
    container = pod["containers"][0]
    container["args"] += ["--nthreads", str(k.worker_cores), "--resources", "GPU=1"]
    gpu_limit = {k.gpu_resource: "1"}
    container["resources"] = _quantities(str(k.worker_cores), k.worker_memory, gpu_limit)
    pod["tolerations"] = [{"key": k.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    if k.gpu_node_selector:
        pod["nodeSelector"] = dict(k.gpu_node_selector)
    return spec


def gpu_task_resources(cfg: ClusterConfig, client: Client) -> dict[str, int] | None:
    """Resources to tag GPU tasks with: ``{"GPU": 1}`` when the cluster has GPU workers.

    True when the config starts GPU workers (SLURM ``gpu``, Kubernetes
    ``gpu_workers``), which may still be queued, or when a connected worker offers
    the ``GPU`` resource; otherwise ``None`` (untagged tasks run anywhere).
    """
    slurm_gpu = cfg.kind == "slurm" and cfg.slurm.gpu
    if slurm_gpu or (cfg.kind == "kubernetes" and cfg.kubernetes.gpu_workers):
        return {"GPU": 1}
    workers = client.scheduler_info().get("workers", {}).values()
    return {"GPU": 1} if any("GPU" in (w.get("resources") or {}) for w in workers) else None


def _not_compute_failed(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Compute Failed")


def dask_setup(worker: Any) -> None:
    """Preload of local workers: drop their multi-line "Compute Failed" log records.

    :func:`fan_out` re-raises a task's error on the client, which reports it in one
    line (``run`` keeps the traceback in its log); a local worker's copy would print
    the traceback on the same console.
    """
    logging.getLogger("distributed.worker").addFilter(_not_compute_failed)


def start_local_cluster(cfg: ClusterConfig, plan: Sequence[LocalWorker]) -> Any:
    """Start a loopback ``SpecCluster`` with one nanny-managed process per planned worker.

    Like ``LocalCluster(processes=True)`` but each worker gets its own resources and
    environment (``LocalCluster`` gives all workers the same). ``memory_limit="auto"``
    gives every worker an equal share of the machine's memory.

    Parameters
    ----------
    cfg : ClusterConfig
        Memory limit and dashboard address (a free port when its port is taken,
        :func:`free_dashboard_address`).
    plan : sequence of LocalWorker
        From :func:`local_worker_plan`.
    """
    from distributed import Nanny, Scheduler, SpecCluster

    memory_limit: str | float = 1.0 / len(plan) if cfg.memory_limit == "auto" else cfg.memory_limit
    workers = {
        w.name: {
            "cls": Nanny,
            "options": {
                "host": "127.0.0.1",
                "nthreads": w.nthreads,
                "memory_limit": memory_limit,
                "resources": dict(w.resources),
                "env": dict(w.env),
                "dashboard": False,
                "silence_logs": logging.WARN,
                "preload": [__name__],  # dask_setup below
            },
        }
        for w in plan
    }
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": "127.0.0.1",
            "dashboard": True,
            "dashboard_address": free_dashboard_address(cfg.dashboard_address),
        },
    }
    return SpecCluster(
        workers=workers, scheduler=scheduler, silence_logs=logging.WARN, name="nclsm-local"
    )


def free_dashboard_address(address: str) -> str:
    """``address`` (``HOST:PORT``) when its port is free on that host, else ``HOST:0`` (any free port).

    Port 0 and addresses without a port are returned as they are. The check binds
    the port the way the dashboard's server does (``SO_REUSEADDR``), so only a port
    another process listens on counts as taken; the choice is logged.

    >>> free_dashboard_address("127.0.0.1:0")
    '127.0.0.1:0'
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        return address
    bind_host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, int(port)))
        except OSError as exc:
            logger.info("dashboard port %s on %s is taken (%s); using a free port instead",
                        port, bind_host, exc.strerror or exc)
            return f"{host}:0"
    return address


def monitoring_urls(client: Client) -> dict[str, str]:
    """The dashboard and Prometheus ``/metrics`` URLs of ``client``'s scheduler; empty without a dashboard.

    Returns
    -------
    dict of str to str
        ``{"dashboard": ".../status", "metrics": ".../metrics"}``.
    """
    try:
        link = str(client.dashboard_link)
    except Exception:  # no dashboard service on a foreign scheduler: nothing to point Prometheus at
        return {}
    base = link[: -len("/status")] if link.endswith("/status") else link.rstrip("/")
    return {"dashboard": link, "metrics": base + METRICS_PATH}


def close_local_workers(cluster: Any, timeout_s: float) -> None:
    """Close the worker processes of a local ``SpecCluster`` before the cluster itself.

    ``SpecCluster.close`` closes each nanny with its default 5 s timeout: after
    4 s a worker process that has not exited is killed with a "Worker process still
    alive after 4.0 seconds, killing" warning. A worker that imported torch spends
    seconds in interpreter teardown (C++ and OpenMP finalisers, no Python frame
    left) on a busy machine, so this closes every nanny with ``timeout_s``
    instead; the cluster's own close then finds them closed.
    """

    async def close_all() -> None:
        nannies = list(getattr(cluster, "workers", {}).values())
        results = await asyncio.gather(*(n.close(timeout=timeout_s, reason="nclsm-close") for n in nannies),
                                       return_exceptions=True)
        for nanny, res in zip(nannies, results, strict=True):
            if isinstance(res, BaseException):
                logger.info("closing worker %s: %s", getattr(nanny, "name", nanny), res)

    cluster.sync(close_all)


def _slurm_cluster(cfg: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    kwargs = slurm_cluster_kwargs(cfg)
    jobqueue = _require("dask_jobqueue")
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "cluster.kind=slurm but 'sbatch' is not on PATH: run nclsm-scale on a SLURM login or "
            "submit node (or inside a batch job)."
        )
    s = cfg.slurm
    kwargs["scheduler_options"] = {"dashboard_address": free_dashboard_address(cfg.dashboard_address)}
    try:
        cluster = jobqueue.SLURMCluster(**kwargs)
    except (ValueError, OSError, RuntimeError) as exc:  # e.g. an unknown network interface
        raise ConfigError(f"cannot start the SLURMCluster scheduler: {exc}") from None
    stack.callback(cluster.close)
    if s.min_jobs == s.max_jobs:
        cluster.scale(jobs=s.max_jobs)
    else:
        cluster.adapt(minimum_jobs=s.min_jobs, maximum_jobs=s.max_jobs)
    logger.info("SLURM worker job script:\n%s", cluster.job_script())
    return cluster


def _kube_cluster(cfg: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    k = cfg.kubernetes
    name = f"{k.name_prefix}-{uuid.uuid4().hex[:8]}"
    spec = kube_cluster_spec(cfg, name)
    gpu_spec = kube_gpu_worker_spec(cfg) if k.gpu_workers else None
    operator = _require("dask_kubernetes.operator")
    import kr8s

    try:
        kr8s.api(namespace=k.namespace)
    except Exception as exc:  # kr8s raises ValueError, OSError, httpx errors, ...
        raise ConfigError(
            f"cannot reach Kubernetes (kubeconfig or in-cluster credentials): {exc}"
        ) from None
    where = f"namespace {k.namespace!r}" if k.namespace else "the current namespace"
    try:
        cluster = operator.KubeCluster(
            custom_cluster_spec=spec,
            namespace=k.namespace,
            resource_timeout=k.resource_timeout_s,
            shutdown_on_close=True,
            quiet=True,
        )
        stack.callback(cluster.close)
        if gpu_spec is not None:
            cluster.add_worker_group("gpu", custom_spec=gpu_spec)
        if k.min_workers < k.max_workers:
            cluster.adapt(minimum=k.min_workers, maximum=k.max_workers)
    except Exception as exc:  # RuntimeError, TimeoutError, httpx and kr8s errors, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot start the Dask cluster {name!r} in {where}: {first} (is the Dask operator "
            "installed and the image pullable?)"
        ) from None
    return cluster


@contextlib.contextmanager
def open_client(cfg: ClusterConfig, *, echo: bool = True) -> Iterator[Client]:
    """Yield a :class:`distributed.Client` for ``cfg``; close what was started on exit.

    Parameters
    ----------
    cfg : ClusterConfig
        ``kind`` ``local`` (GPU-aware, :func:`local_worker_plan`), ``address``,
        ``slurm`` or ``kubernetes``; see the module docstring.
    echo : bool
        Print the dashboard and ``/metrics`` URLs to stderr (one line).

    Raises
    ------
    ConfigError
        When the scheduler cannot be reached, the cluster cannot start, or the
        extra a kind needs is not installed.
    """
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if cfg.kind == "local":
            gpu_ids = [] if cfg.local_gpus == 0 else visible_gpu_ids()
            plan = local_worker_plan(gpu_ids, os.cpu_count() or 1, cfg)
            gpus = [w.env["CUDA_VISIBLE_DEVICES"] for w in plan if w.resources]
            logger.info("local cluster: %d workers, GPU workers on %s", len(plan), gpus or "none")
            cluster = stack.enter_context(start_local_cluster(cfg, plan))
            stack.callback(close_local_workers, cluster, cfg.close_timeout_s)  # after the client, before the cluster
            client = stack.enter_context(Client(cluster))
        elif cfg.kind == "address":
            try:
                client = stack.enter_context(Client(cfg.address, timeout="30s"))
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at cluster.address={cfg.address!r}: {exc}"
                ) from None
        else:
            start = _slurm_cluster if cfg.kind == "slurm" else _kube_cluster
            cluster = start(cfg, stack)
            client = stack.enter_context(Client(cluster))
        urls = monitoring_urls(client)
        if echo and urls:
            print(f"Dask dashboard: {urls['dashboard']}  Prometheus metrics: {urls['metrics']}", file=sys.stderr)
        logger.debug("dask client %s, monitoring %s", client, urls)
        yield client


def _track(futures: list[Future], desc: str) -> Iterator[Future]:
    """Yield futures as they finish while a progress bar counts them.

    Inside ``run`` (:data:`nclsm_scale.progress.current` set in this thread) the
    counts go to the run's one progress display instead of a bar of their own;
    elsewhere the bar shows only on a terminal.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    from nclsm_scale.progress import bar_disabled, current

    if (run := current.get()) is not None:
        progress, key = run
        progress.tasks_added(key, len(futures))
        for future in as_completed(futures):
            progress.task_done(key)
            yield future
        return
    with tqdm(total=len(futures), desc=desc, unit="task", disable=bar_disabled(), leave=False) as bar:
        for future in as_completed(futures):
            bar.update(1)
            yield future


def fan_out(
    client: Client | None,
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    desc: str,
    retries: int = 0,
    resources: dict[str, int] | None = None,
) -> list[T]:
    """Run ``fn(*args)`` for every ``args`` of ``calls`` as Dask tasks; return the results in order.

    The one way stages send work to the cluster: one task per call (``pure=False``,
    so reruns compute again), up to ``retries`` reruns of a failed task, tasks
    tagged with ``resources`` (``{"GPU": 1}``) when given, progress counted as tasks
    finish, and the first failure re-raised as soon as it happens, with the
    remaining tasks cancelled (also on Ctrl-C). With ``client`` None the calls run
    in this process, in order.

    Parameters
    ----------
    client : distributed.Client or None
    fn : picklable function of one task.
    calls : sequence of argument tuples, one per task.
    desc : label of the progress bar.
    retries : reruns of a task after an error or a lost worker.
    resources : Dask resources each task needs, e.g. ``{"GPU": 1}``.
    """
    if not calls:
        return []
    if client is None:
        return [fn(*args) for args in calls]
    kw: dict[str, Any] = {"resources": resources} if resources else {}
    futures = client.map(fn, *zip(*calls, strict=True), retries=retries, pure=False, **kw)
    try:
        for future in _track(futures, desc):
            if future.status == "error":
                future.result()  # re-raise the task's error (e.g. HaloViolationError) now
    except BaseException:
        client.cancel(futures)
        raise
    return list(client.gather(futures))
