"""Map source backed by the network: the inference engine run on the slide.

The engine is loaded once per worker by :class:`~nclsm_scale.model.worker.ModelPlugin`;
an :class:`EngineMaps` only carries the slide path, level, channel indices and the
slide's global normalisation constants. The engine places its windows on a lattice
anchored at the slide origin, so maps of any region are bit-identical to those of
the whole slide; outside the slide the maps are zero. A region whose edges lie on
that lattice (multiples of :attr:`EngineMaps.stride_px`) costs exactly its own
windows; any other region also pays for the windows its edges cut.

With a :class:`~nclsm_scale.segment.resample.VirtualPlane` the network reads the
level resampled to the segmentation pixel size instead; the lattice is then anchored
at the virtual plane's origin, and a window of the plane equals the crop of the whole
plane, so the same exactness holds there.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from nclsm_scale.config import ModelConfig
from nclsm_scale.errors import SlideReadError
from nclsm_scale.normalise import NormStats, apply_norm, slide_norm
from nclsm_scale.segment.resample import VirtualPlane
from nclsm_scale.slide import Slide, open_slide

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["INPUT_ROLES", "EngineMaps", "engine_source"]

#: Image channels the network reads, in order, by role; only the membrane is required, a slide
#: without a mito channel gives the network zeros there (it is trained with that channel dropped).
INPUT_ROLES = ("membrane", "mito")


class EngineMaps:
    """Network maps of a slide level, or of its virtual plane; ``engine=None`` uses the worker's engine.

    ``shape_yx`` is the size of the plane the maps cover: the level's, or ``plane.shape``
    when ``plane`` resamples the level.
    """

    def __init__(
        self,
        slide_path: str,
        level: int,
        shape_yx: tuple[int, int],
        channel_index: list[int | None],
        norm: NormStats,
        engine: Any = None,
        stride_px: int = 1,
        plane: VirtualPlane | None = None,
    ) -> None:
        from nclsm_scale.model.infer import MAP_CHANNELS

        self.slide_path = slide_path
        self.level = level
        self.shape_yx = shape_yx
        self.channel_index = list(channel_index)
        self.norm = norm
        self.channels = MAP_CHANNELS
        self.stride_px = int(stride_px)
        self.plane = plane
        self._given = engine
        self._slide: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_given": None, "_slide": None}

    def _read_level(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Normalised level pixels of a region: one plane per input role, zeros for a missing channel."""
        present = [c for c in self.channel_index if c is not None]
        block = apply_norm(self._slide.read(self.level, y0, x0, y1, x1)[present], self.norm, present)
        out = np.zeros((len(self.channel_index), y1 - y0, x1 - x0), np.float32)
        out[[i for i, c in enumerate(self.channel_index) if c is not None]] = block
        return out

    def _read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Normalised network input of a region of the plane (resampled when virtual)."""
        if self.plane is None:
            return self._read_level(y0, x0, y1, x1)
        return self.plane.resample(self._read_level, y0, x0, y1, x1)

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
    slide: Slide, level: int, model_cfg: ModelConfig, client: Client, plane: VirtualPlane | None = None
) -> tuple[EngineMaps, str]:
    """The network map source of a slide level (or of its virtual ``plane``), with the model registered.

    Returns the source and a string identifying everything its maps depend on
    (model settings and normalisation constants; the plane is the caller's to record), for
    resume fingerprints. The source's ``stride_px`` is the engine's window lattice step, asked
    of a worker.
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
    shape = plane.shape if plane is not None else (int(ny), int(nx))
    source = EngineMaps(slide.path, level, shape, idx, norm, stride_px=stride_px, plane=plane)
    ident = json.dumps({"model": model_cfg.model_dump(), "norm": norm.model_dump(), "inputs": idx},
                       sort_keys=True)
    return source, f"engine:{ident}"
