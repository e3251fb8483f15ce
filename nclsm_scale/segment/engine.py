"""Map source backed by the network: the inference engine run on the slide.

The engine is loaded once per worker by :class:`~nclsm_scale.model.worker.ModelPlugin`;
an :class:`EngineMaps` only carries the slide path, level, channel indices and the
slide's global normalisation constants. The engine places its windows on a lattice
anchored at the slide origin, so maps of any region are bit-identical to those of
the whole slide; outside the slide the maps are zero. A region whose edges lie on
that lattice (multiples of :attr:`EngineMaps.stride_px`) costs exactly its own
windows; any other region also pays for the windows its edges cut.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import SlideReadError
from nclsm_scale.normalise import NormStats, apply_norm, slide_norm
from nclsm_scale.slide import Slide, open_slide

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["INPUT_ROLES", "EngineMaps", "engine_source"]

#: Image channels the network reads, in order, by role; only the membrane is required, a slide
#: without a mito channel gives the network zeros there (it is trained with that channel dropped).
INPUT_ROLES = ("membrane", "mito")


class EngineMaps:
    """Network maps of a slide level; ``engine=None`` uses the worker's engine."""

    def __init__(
        self,
        slide_path: str,
        level: int,
        shape_yx: tuple[int, int],
        channel_index: list[int | None],
        norm: NormStats,
        engine: Any = None,
        stride_px: int = 1,
    ) -> None:
        from nclsm_scale.model.infer import MAP_CHANNELS

        self.slide_path = slide_path
        self.level = level
        self.shape_yx = shape_yx
        self.channel_index = list(channel_index)
        self.norm = norm
        self.channels = MAP_CHANNELS
        self.stride_px = int(stride_px)
        self._given = engine
        self._slide: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_given": None, "_slide": None}

    def _read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Normalised network input of a region: one plane per input role, zeros for a missing channel."""
        present = [c for c in self.channel_index if c is not None]
        block = apply_norm(self._slide.read(self.level, y0, x0, y1, x1)[present], self.norm, present)
        out = np.zeros((len(self.channel_index), y1 - y0, x1 - x0), np.float32)
        out[[i for i, c in enumerate(self.channel_index) if c is not None]] = block
        return out

    def _engine(self) -> Any:
        """The engine (the worker's unless one was given), with the slide opened."""
        if self._slide is None:
            self._slide = open_slide(self.slide_path)
        if self._given is not None:
            return self._given
        from nclsm_scale.model.worker import get_engine

        return get_engine()

    def maps(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Maps of the region; the network runs on the part inside the slide."""
        engine = self._engine()
        ny, nx = self.shape_yx
        out = np.zeros((len(self.channels), y1 - y0, x1 - x0), dtype=np.float32)
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
        if cy0 < cy1 and cx0 < cx1:
            out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = engine.predict_region(
                self._read, self.shape_yx, cy0, cx0, cy1, cx1
            )
        return out

    def window_maps(self, windows: list[tuple[int, int]]) -> np.ndarray:
        """Valid centres ``(n, K, stride, stride)`` of lattice windows, batched across the list."""
        return self._engine().predict_windows(self._read, self.shape_yx, windows)


def _worker_stride_px() -> int:
    from nclsm_scale.model.worker import get_engine

    return int(get_engine().stride_px)


def engine_source(
    slide: Slide, level: int, model_cfg: ModelConfig, client: Client
) -> tuple[EngineMaps, str]:
    """The network map source of a slide level, with the model registered on ``client``'s workers.

    Returns the source and a string identifying everything its maps depend on
    (model settings and normalisation constants), for resume fingerprints. The
    source's ``stride_px`` is the engine's window lattice step, asked of a worker.
    """
    from nclsm_scale.model.worker import register_model

    if "membrane" not in slide.roles:
        raise SlideReadError(
            f"{slide.path}: no channel has the role 'membrane' (channels {list(slide.channel_names)}); convert "
            "it again naming the membrane channel (--channels), or pass stored maps with --maps."
        )
    norm = slide_norm(slide)
    register_model(client, model_cfg)
    _, ny, nx = slide.levels[level].shape
    idx = [slide.roles.get(r) for r in INPUT_ROLES]
    stride_px = client.submit(_worker_stride_px, pure=False).result()
    source = EngineMaps(slide.path, level, (ny, nx), idx, norm, stride_px=stride_px)
    ident = json.dumps({"model": model_cfg.model_dump(), "norm": norm.model_dump(), "inputs": idx},
                       sort_keys=True)
    return source, f"engine:{ident}"
