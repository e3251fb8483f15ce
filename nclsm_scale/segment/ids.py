"""Global fibre IDs: dense 1..N, ranked by the seed's global raster position.

Each block returns the sorted global linear indices of the seeds it owns; the
seed table is their sorted union, and a seed's ID is its rank in the table plus
one. Unlike IDs from a prefix sum over blocks in block order, these IDs do not
depend on the block size or grid offset, so labels of two chunkings are equal
value for value (not only up to renumbering). The table is a flat int64 array
(8 bytes per fibre) saved as ``.npy`` and memory-mapped by the assignment tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["load_table", "save_table", "seed_table"]


def seed_table(per_block: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted global linear indices of all seeds from the per-block lists.

    Raises ``ValueError`` if a seed is owned twice (the grid would be broken).
    """
    if not per_block:
        return np.zeros(0, dtype=np.int64)
    table = np.sort(np.concatenate([np.asarray(s, dtype=np.int64) for s in per_block]))
    if table.size > 1 and np.any(table[1:] == table[:-1]):
        raise ValueError("a seed is owned by two blocks; block cores overlap")
    if table.size >= 2**32 - 1:
        raise ValueError(f"{table.size} seeds do not fit uint32 labels")
    return table


def save_table(path: str | Path, table: np.ndarray) -> None:
    """Write the seed table atomically (``.npy``)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(table, dtype=np.int64))
    tmp.replace(path)


def load_table(path: str | Path) -> np.ndarray:
    """Memory-map a saved seed table."""
    return np.load(path, mmap_mode="r")
