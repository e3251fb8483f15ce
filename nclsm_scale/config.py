"""Configuration: one pydantic model holding every default.

A run's configuration is :class:`RunConfig`, one section per stage (the same word
as the stage's module and CLI command). ``configs/default.yaml`` mirrors the
defaults declared here (a test keeps them equal); preset files hold only the keys
they change. :func:`load_config` merges files and command-line overrides and turns
every problem into a :class:`~nclsm_scale.errors.ConfigError` that names the file,
the key and what is allowed.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nclsm_scale.errors import ConfigError

__all__ = [
    "ClusterConfig",
    "ConvertConfig",
    "ModelConfig",
    "RunConfig",
    "SegmentConfig",
    "SynthConfig",
    "config_dirs",
    "list_presets",
    "load_config",
    "parse_set_option",
]


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthConfig(_Section):
    """Synthetic muscle sections with exact ground truth (``nclsm-scale synth``)."""

    size_px: tuple[int, int] = Field((4096, 4096), description="Slide size (y, x) in pixels.")
    seed: int = Field(0, ge=0, description="Random seed; the same seed gives identical files.")
    pixel_size_um: float = Field(0.5, gt=0.05, le=10.0, description="Physical pixel size.")
    chunk_px: int = Field(1024, ge=128, le=8192, description="Rendering chunk edge length.")
    tile_px: int = Field(256, ge=16, le=4096, multiple_of=16, description="OME-TIFF tile edge.")
    mean_csa_um2: float = Field(4800.0, gt=50.0, le=50000.0, description="Mean fibre CSA.")
    csa_cv: float = Field(0.3, ge=0.0, le=1.0, description="Coefficient of variation of CSA.")
    gap_um: float = Field(2.0, ge=0.0, le=50.0, description="Endomysium gap between fibres.")
    touching_fraction: float = Field(0.1, ge=0.0, le=1.0, description="Share of neighbour pairs that touch.")
    atrophic_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of small, angular fibres.")
    hypertrophic_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of enlarged fibres.")
    ntm_fraction: float = Field(0.2, ge=0.0, le=1.0, description="Share of fascicles cut obliquely (NTM).")
    fam_fraction: float = Field(0.03, ge=0.0, le=1.0, description="Share of fibres with freeze artefacts.")
    folds: int = Field(1, ge=0, le=20, description="Number of folded tissue bands (FR).")


class ConvertConfig(_Section):
    """Whole-slide image to OME-Zarr conversion (``nclsm-scale convert``)."""

    chunk_px: int = Field(1024, ge=64, le=8192, description="Zarr chunk edge (y and x).")
    shard_px: int | None = Field(
        None, ge=64, description="Shard edge; None picks one for large slides, 0 disables."
    )
    compression_level: int = Field(3, ge=1, le=22, description="zstd level.")
    min_level_px: int = Field(1024, ge=64, description="Stop the pyramid at this size.")
    pixel_size_um: float | None = Field(None, gt=0.0, description="Override/assume the pixel size.")
    channels: list[str] | None = Field(
        None, description="Channel names in file order, e.g. [membrane, mito]."
    )
    overwrite: bool = Field(False, description="Redo slides that are already converted.")


class ModelConfig(_Section):
    """The fibre network and its inference settings."""

    weights: str | None = Field(None, description="Weights file; None uses the bundled weights.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Torch device.")
    batch_size: int = Field(4, ge=1, le=256, description="Windows per forward pass.")
    window_px: int = Field(512, ge=64, le=4096, description="Network window edge.")
    amp: bool = Field(True, description="Mixed precision on GPU (ignored on CPU).")


class SegmentConfig(_Section):
    """Distributed segmentation with exact stitching (``nclsm-scale segment``)."""

    level: int | None = Field(None, ge=0, description="Pyramid level; None = nearest the target.")
    target_pixel_size_um: float = Field(1.0, gt=0.0, description="Preferred segmentation pixel size.")
    block_px: int = Field(1024, ge=64, le=16384, description="Block core edge at the segmentation level.")
    max_fibre_diameter_um: float = Field(
        150.0, gt=0.0, description="Largest expected fibre diameter; sets the default halo."
    )
    halo_um: float | None = Field(None, gt=0.0, description="Halo; None = 2 x max fibre diameter.")


class ClusterConfig(_Section):
    """Where Dask work runs."""

    kind: Literal["local", "address", "slurm", "kubernetes"] = Field(
        "local", description="local LocalCluster, an existing scheduler address, SLURM or Kubernetes."
    )
    address: str | None = Field(None, description="Scheduler address for kind=address.")
    n_workers: int | None = Field(None, ge=1, description="Local workers; None = one per core.")
    threads_per_worker: int = Field(1, ge=1, description="Threads per local worker.")
    memory_limit: str = Field("auto", description="Memory limit per local worker.")
    dashboard_address: str = Field(":0", description="Dashboard bind address (:0 picks a free port).")

    @model_validator(mode="after")
    def _address_needed(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs cluster.address, e.g. tcp://host:8786")
        return self


class RunConfig(_Section):
    """Everything a run can be configured with; one section per stage."""

    synth: SynthConfig = SynthConfig()
    convert: ConvertConfig = ConvertConfig()
    model: ModelConfig = ModelConfig()
    segment: SegmentConfig = SegmentConfig()
    cluster: ClusterConfig = ClusterConfig()


def config_dirs() -> list[Path]:
    """Folders searched for preset names: the installed package copy, then the checkout's."""
    dirs = [Path(str(importlib.resources.files("nclsm_scale"))) / "configs"]
    dirs.append(Path(__file__).resolve().parent.parent / "configs")
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[str]:
    """Names of the shipped presets (``default`` included)."""
    names = {p.stem for d in config_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def _resolve(source: str | Path) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    for folder in config_dirs():
        candidate = folder / f"{source}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"config file not found: {source}. Give a path to a YAML file or one of the "
        f"presets: {', '.join(list_presets())}."
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections "
            f"({', '.join(RunConfig.model_fields)}), found {type(data).__name__}."
        )
    return data


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _format_errors(exc: pydantic.ValidationError, origin: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p != "__root__"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}.")
        else:
            msg = err["msg"]
            if "input" in err and err["type"] != "missing":
                msg += f" (got {err['input']!r})"
            lines.append(f"key '{key}': {msg}.")
    return ConfigError(f"{origin}: invalid configuration: " + " ".join(lines))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def parse_set_option(text: str) -> tuple[str, Any]:
    """Parse one ``--set section.key=value`` option; the value is read as YAML.

    >>> parse_set_option("segment.block_px=512")
    ('segment.block_px', 512)
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. segment.block_px=512.")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def load_config(
    sources: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Load a :class:`RunConfig` from YAML files and dotted overrides.

    Parameters
    ----------
    sources : sequence of path or preset name
        Applied in order over the defaults; later files win.
    overrides : mapping of dotted key to value, optional
        Command-line values (``{"segment.block_px": 512}``); ``None`` values are
        ignored so that options the user did not give leave the config alone.

    Returns
    -------
    RunConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        Naming the file (or "command line"), the key and what is allowed.
    """
    merged: dict[str, Any] = {}
    for source in sources:
        path = _resolve(source)
        data = _read_yaml(path)
        try:
            RunConfig.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _format_errors(exc, str(path)) from None
        merged = _merge(merged, data)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        cli = _nest(given)
        try:
            RunConfig.model_validate(cli)
        except pydantic.ValidationError as exc:
            raise _format_errors(exc, "command line") from None
        merged = _merge(merged, cli)
    try:
        return RunConfig.model_validate(merged)
    except pydantic.ValidationError as exc:  # cross-field checks across sources
        origin = ", ".join(str(s) for s in sources) or "command line"
        raise _format_errors(exc, origin) from None
