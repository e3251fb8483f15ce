"""The one place a Dask client is created, and progress over its futures.

:func:`open_client` turns a :class:`~nclsm_scale.config.ClusterConfig` into a
connected :class:`distributed.Client`; stage drivers receive that client and only
submit work to it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from nclsm_scale.config import ClusterConfig
from nclsm_scale.errors import ConfigError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def open_client(cfg: ClusterConfig, *, echo: bool = True) -> Iterator[Any]:
    """Yield a :class:`distributed.Client` for ``cfg``; close what was started on exit.

    Parameters
    ----------
    cfg : ClusterConfig
        ``kind="local"`` starts a ``LocalCluster`` sized to the machine;
        ``kind="address"`` connects to a running scheduler.
    echo : bool
        Print the dashboard URL to stderr.
    """
    from distributed import Client, LocalCluster

    if cfg.kind == "local":
        import os

        n_workers = cfg.n_workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
        )
        client = Client(cluster)
    elif cfg.kind == "address":
        cluster = None
        try:
            client = Client(cfg.address, timeout="30s")
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at cluster.address={cfg.address!r}: {exc}"
            ) from None
    else:
        raise ConfigError(
            f"cluster.kind={cfg.kind!r} needs the cluster extras (pip install 'nclsm-scale[slurm]' "
            "or '[k8s]'); this build supports 'local' and 'address'."
        )
    if echo:
        import sys

        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    logger.info("dask client %s, dashboard %s", client, client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def track(futures: Iterable[Any], desc: str, *, disable: bool | None = None) -> Iterator[Any]:
    """Yield futures as they finish while a progress bar counts them.

    Parameters
    ----------
    futures : iterable of distributed.Future
    desc : str
        Label of the progress bar.
    disable : bool, optional
        ``None`` shows the bar only on a terminal.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = list(futures)
    with tqdm(total=len(futures), desc=desc, unit="task", disable=disable, leave=False) as bar:
        for future in as_completed(futures):
            bar.update(1)
            yield future
