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
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nclsm_scale.errors import ConfigError

__all__ = [
    "AggregateConfig",
    "ArchiveConfig",
    "ClusterConfig",
    "ConvertConfig",
    "CurateConfig",
    "GridConfig",
    "KubernetesConfig",
    "MeasureConfig",
    "ModelConfig",
    "ReportConfig",
    "RunConfig",
    "SegmentConfig",
    "SlurmConfig",
    "SynthConfig",
    "TrainConfig",
    "ViewConfig",
    "config_dirs",
    "list_presets",
    "load_config",
    "parse_set_option",
]


class _Section(BaseModel):
    """Base of every config section: unknown keys, NaN and infinite numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Stain = Literal["membrane", "mito", "myh1", "myh2a", "myh2x", "dapi"]
FibreType = Literal["I", "IIa", "IIx", "I/IIa", "IIa/IIx"]


class SynthConfig(_Section):
    """Synthetic muscle sections with exact ground truth (``nclsm-scale synth``).

    Most geometry fields are fixed values; fields ending in ``_range`` are (low, high)
    bounds from which each slide draws its own value from the seed, so that a set of
    slides covers the looks of real sections (stains, scanners, labs, artefacts).
    """

    size_px: tuple[int, int] = Field((4096, 4096), description="Slide size (y, x) in pixels.")
    seed: int = Field(0, ge=0, description="Random seed; the same seed gives identical files.")
    pixel_size_um: float = Field(0.5, gt=0.05, le=10.0, description="Physical pixel size.")
    chunk_px: int = Field(1024, ge=128, le=8192, description="Rendering chunk edge length.")
    tile_px: int = Field(256, ge=16, le=4096, multiple_of=16, description="OME-TIFF tile edge.")
    compression: Literal["zlib", "zstd", "none"] = Field(
        "zlib", description="OME-TIFF compression."
    )
    min_level_px: int = Field(
        1024, ge=64, description="Last pyramid level's longer edge is at most this."
    )
    mean_csa_um2: float = Field(4800.0, gt=50.0, le=50000.0, description="Mean fibre CSA.")
    csa_cv: float = Field(0.3, ge=0.1, le=0.6, description="Coefficient of variation of CSA.")
    gap_um: float = Field(2.0, ge=0.0, le=50.0, description="Endomysium gap between fibres.")
    touching_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of neighbour pairs that touch."
    )
    atrophic_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of small, angular fibres."
    )
    hypertrophic_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of enlarged fibres."
    )
    fascicle_diameter_um: float = Field(
        900.0, gt=0.0, description="Typical fascicle diameter (at least 5 fibre diameters)."
    )
    perimysium_um: float = Field(
        15.0, ge=0.0, le=200.0, description="Typical gap between fascicles (pairs vary, see below)."
    )
    perimysium_factor_range: tuple[float, float] = Field(
        (0.3, 4.0),
        description="Per fascicle pair, the gap is perimysium_um times a factor from this range "
        "(skewed low: most pairs are close, a few lie 60-100 um apart with the fibres that drop "
        "out along fascicle outlines, as in real sections).",
    )
    dropout_fraction_range: tuple[float, float] = Field(
        (0.0, 0.08),
        description="Share of fibres missing from the section (clustered): their space is dark "
        "interstitium, never labelled.",
    )
    outline_wave_um_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Amplitude of fine, wavy fibre outlines (a fine domain warp; labels follow it)."
    )
    warp_fraction: float = Field(
        0.08, ge=0.0, le=0.15, description="Domain-warp amplitude as a share of the fibre spacing."
    )
    ntm_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="Share of fascicles cut obliquely (NTM; NCL-SM ~36 %)."
    )
    ntm_aspect_range: tuple[float, float] = Field(
        (2.0, 4.0), description="Aspect ratio of oblique (NTM) fibre profiles, within [1, 4]."
    )
    fam_fraction: float = Field(
        0.03, ge=0.0, le=1.0, description="Share of fibres with freeze artefacts."
    )
    folds: int = Field(1, ge=0, le=20, description="Number of folded tissue bands (FR).")
    fold_width_um: float = Field(
        100.0, gt=0.0, le=5000.0, description="Typical width of a fold band."
    )
    fr_min_fold_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="A fibre with at least this share in a fold is FR."
    )
    hole_fraction: float = Field(
        0.03, ge=0.0, le=0.5, description="Approximate share of tissue in holes."
    )
    tissue_extent: float = Field(
        1.0, gt=0.1, le=3.0, description="Tissue outline size relative to the slide (1: ~70 %)."
    )
    debris_max_um2: float = Field(150.0, ge=0.0, description="Fibres smaller than this are DEBRIS.")
    blur_sigma_um_range: tuple[float, float] = Field(
        (0.35, 1.0), description="Gaussian PSF sigma (um) range."
    )
    membrane_width_um_range: tuple[float, float] = Field(
        (0.5, 2.5), description="Membrane band width range (thin sarcolemma to thick basement-membrane bands)."
    )
    stains: list[Stain] = Field(
        ["membrane", "mito"],
        description="Channels to render, in order: membrane (required), mito, myh1 (MyHC I), myh2a (MyHC IIa), "
        "myh2x (MyHC IIx), dapi (nuclei).",
    )
    fibre_type_shares: dict[FibreType, float] = Field(
        {"I": 0.45, "IIa": 0.35, "IIx": 0.1, "I/IIa": 0.05, "IIa/IIx": 0.05},
        description="Expected shares of ground-truth fibre types (human vastus lateralis-like; renormalised).",
    )
    type_share_jitter: float = Field(
        0.6, ge=0.0, le=3.0,
        description="Each slide scales every type share by exp(u), u uniform in +-this, then renormalises.",
    )
    type_contrast_range: tuple[float, float] = Field(
        (1.2, 3.0), description="Mito level ratio type I / type IIx (IIa lies between)."
    )
    mito_spread_range: tuple[float, float] = Field(
        (0.08, 0.3), description="Per-fibre log-normal spread of mito level within a type."
    )
    myhc_background_range: tuple[float, float] = Field(
        (0.02, 0.3),
        description="MyHC channel level in fibres of other types, relative to positive fibres (weak "
        "antibodies such as some anti-IIx clones cross-react up to ~30 %; keep it under 0.35 so that "
        "types stay separable).",
    )
    connective_membrane_range: tuple[float, float] = Field(
        (0.0, 1.0),
        description="Membrane-channel brightness of endomysium and perimysium relative to the membrane "
        "(0: dark, as dystrophin; 1: as bright, as laminin or WGA).",
    )
    interstitium_range: tuple[float, float] = Field(
        (0.0, 0.12), description="Non-membrane channel level of stained interstitium (0 = black)."
    )
    unstained_share_range: tuple[float, float] = Field(
        (0.0, 0.7), description="Share of interstitium left unstained (black patches, gaps, tears)."
    )
    vessel_spacing_um_range: tuple[float, float] = Field(
        (120.0, 320.0),
        description="Spacing of candidate sites for blood vessels and nerves; a site is used only where "
        "the perimysium has room.",
    )
    vessel_diameter_um_range: tuple[float, float] = Field(
        (10.0, 60.0), description="Outer diameter of arterioles and venules."
    )
    nerve_diameter_um_range: tuple[float, float] = Field(
        (20.0, 90.0), description="Diameter of intramuscular nerve bundles."
    )
    nerve_share_range: tuple[float, float] = Field(
        (0.05, 0.3), description="Share of vessel/nerve sites that hold a nerve bundle."
    )
    defocus_share_range: tuple[float, float] = Field(
        (0.0, 0.3), description="Share of the slide that is out of focus."
    )
    defocus_sigma_um_range: tuple[float, float] = Field(
        (0.8, 2.5), description="Extra blur (Gaussian sigma) in out-of-focus regions."
    )
    signal_range: tuple[float, float] = Field(
        (1500.0, 20000.0), description="Peak signal (counts) range of the brighter channel."
    )
    read_noise_range: tuple[float, float] = Field((5.0, 60.0), description="Read noise (counts).")
    offset_range: tuple[float, float] = Field((80.0, 400.0), description="Camera offset (counts).")
    illumination_range: tuple[float, float] = Field(
        (0.0, 0.35), description="Strength of slide-wide and scanner-tile shading (0 = flat)."
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SynthConfig:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_range") and not (0 <= value[0] <= value[1]):
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value}")
        lo, hi = self.ntm_aspect_range
        if not 1.0 <= lo <= hi <= 4.0:
            raise ValueError(f"ntm_aspect_range must lie within [1, 4], got {self.ntm_aspect_range}")
        if min(self.size_px) < 1:
            raise ValueError(f"size_px must be positive, got {self.size_px}")
        if "membrane" not in self.stains or len(set(self.stains)) != len(self.stains):
            raise ValueError(f"stains must list membrane and no stain twice, got {self.stains}")
        if sum(self.fibre_type_shares.values()) <= 0 or min(self.fibre_type_shares.values()) < 0:
            raise ValueError(f"fibre_type_shares must be >= 0 with a positive sum, got {self.fibre_type_shares}")
        return self


class ConvertConfig(_Section):
    """Whole-slide image to OME-Zarr conversion (``nclsm-scale convert``)."""

    chunk_px: int = Field(1024, ge=64, le=8192, description="Zarr chunk edge (y and x).")
    shard_px: int | None = Field(
        None, ge=0,
        description="Level-0 shard edge, a multiple of chunk_px; None picks one for large slides, 0 disables.",
    )
    compression_level: int = Field(3, ge=1, le=22, description="zstd level.")
    min_level_px: int = Field(1024, ge=64, description="Stop the pyramid at this size.")
    pixel_size_um: float | None = Field(
        None, gt=0.0, description="Pixel size (um) for slides whose files carry none."
    )
    task_px: int = Field(
        4096, ge=64, le=32768,
        description="Region edge one task converts (rounded to whole shards); bounds worker memory.",
    )
    task_channels: int = Field(
        4, ge=1, le=4096,
        description="Channels one task converts (and per level-0 shard); bounds worker memory for "
        "many-channel slides such as imaging mass cytometry.",
    )
    channels: list[str] | None = Field(
        None, description="Channel names in file order, e.g. [membrane, mito]."
    )
    overwrite: bool = Field(False, description="Redo slides that are already converted.")
    min_pixel_size_um: float = Field(
        0.05, gt=0.0,
        description="Slides with finer pixels are refused before work starts (4x finer than light microscopy "
        "resolves: a wrong unit or scale in the file).",
    )
    max_pixel_size_um: float = Field(
        20.0, gt=0.0,
        description="Slides with coarser pixels are refused (a fibre of 50 um would be under 3 px across).",
    )
    min_slide_um: float = Field(
        100.0, ge=0.0,
        description="Slides whose shorter edge is shorter are refused (about three small adult fibres across).",
    )

    @model_validator(mode="after")
    def _shard_multiple(self) -> ConvertConfig:
        if self.shard_px and self.shard_px % self.chunk_px:
            raise ValueError(f"shard_px {self.shard_px} is not a multiple of chunk_px {self.chunk_px}")
        if self.min_pixel_size_um >= self.max_pixel_size_um:
            raise ValueError(f"min_pixel_size_um {self.min_pixel_size_um} must be below max_pixel_size_um "
                             f"{self.max_pixel_size_um}")
        return self


class ModelConfig(_Section):
    """The fibre network and its inference settings."""

    weights: str | None = Field(None, description="Weights file; None uses the bundled weights.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Torch device.")
    batch_size: int = Field(4, ge=1, le=256, description="Windows per forward pass.")
    window_px: int = Field(
        1024, ge=64, le=4096, description="Network window edge (a multiple of the downsampling, 16)."
    )
    amp: bool = Field(True, description="Mixed precision on GPU (ignored on CPU).")
    cpu_path: Literal["auto", "eager", "fused", "bf16", "compile"] = Field(
        "auto",
        description="CPU inference: eager (fp32 as trained), fused (batch norm folded into the convolutions, "
        "channels-last, fp32), bf16 (fused under bfloat16 autocast), compile (fused, torch.compile; needs a "
        "C++ compiler, compiles once per worker); auto = bf16 on CPUs with native bfloat16, else fused.",
    )
    margin_px: int | None = Field(
        None, ge=0, le=1024, description="Discarded window border; None = the weights' measured receptive field."
    )


class TrainConfig(_Section):
    """Training the fibre network (``nclsm-scale train``)."""

    data: list[str] = Field(
        ["synth"], description="Sources: synth, ncl-sm, an OME-Zarr store or a folder of masks/pairs."
    )
    ncl_sm_dir: str | None = Field(None, description="Folder of NCL-SM *_fibres.tiff masks for data 'ncl-sm'.")
    steps: int = Field(2000, ge=1, le=10_000_000, description="Optimiser steps.")
    seed: int = Field(0, ge=0, description="Seed of weights, batches and augmentation.")
    batch_size: int = Field(8, ge=1, le=512, description="Patches per step.")
    patch_px: int = Field(128, ge=32, le=2048, multiple_of=16, description="Training patch edge.")
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0, description="Peak Adam learning rate (one-cycle).")
    pixel_size_um: float = Field(1.0, gt=0.05, le=10.0, description="Pixel size images are rendered at.")
    mask_pixel_size_um: float = Field(0.25, gt=0.01, le=10.0, description="Pixel size of NCL-SM masks.")
    holdout_fraction: float = Field(
        0.34, ge=0.0, lt=1.0, description="Bottom share of each NCL-SM mask's rows never trained on."
    )
    renders_per_mask: int = Field(3, ge=1, le=100, description="Renders of each NCL-SM training mask.")
    clean_renders: int = Field(
        0, ge=0, le=100,
        description="How many of each mask's renders are drawn clean (no interstitium, connective "
        "tissue, vessels, nerves, tears, speckles, defocus or broken membranes): well-stained sections.",
    )
    synth_sections: int = Field(16, ge=0, le=1000, description="Synthetic sections generated for data 'synth'.")
    synth_size_px: int = Field(1024, ge=256, le=16384, description="Edge of each synthetic section.")
    scale_min: float = Field(0.7, gt=0.1, le=1.0, description="Smallest zoom of the scale augmentation.")
    scale_max: float = Field(1.4, ge=1.0, le=10.0, description="Largest zoom of the scale augmentation.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints (resume point).")
    base_channels: int = Field(8, ge=2, le=128, description="Network width at full resolution.")
    depth: int = Field(4, ge=1, le=6, description="Number of 2x poolings (downsampling 2**depth).")
    init_weights: str | None = Field(
        None,
        description="Weights file to start from (fine-tuning, e.g. the bundled network on your own "
        "annotations); its architecture replaces base_channels and depth. None = random start.",
    )

    @model_validator(mode="after")
    def _clean_within_renders(self) -> TrainConfig:
        if self.clean_renders > self.renders_per_mask:
            raise ValueError(f"clean_renders {self.clean_renders} exceeds renders_per_mask {self.renders_per_mask}")
        return self


class GridConfig(_Section):
    """The block grid ``segment``, ``measure`` and ``curate`` lay over the segmentation level."""

    block_px: int = Field(
        2048, ge=64, le=16384,
        description="Block core edge at the segmentation level (segment rounds it up to the label chunks).",
    )
    max_fibre_diameter_um: float = Field(
        150.0, gt=0.0, description="Largest expected fibre diameter; sets the default halo."
    )
    halo_um: float | None = Field(
        None, gt=0.0, description="Halo around each core; None = the max fibre diameter."
    )
    escalation_limit: int = Field(
        2, ge=0, le=6,
        description="Times a block's halo may be doubled for an oversize fibre before the slide fails.",
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a block task after a transient failure.")

    def halo_px(self, pixel_size_um: float) -> int:
        """Halo in pixels at ``pixel_size_um``: ``halo_um``, else the max fibre diameter, rounded up."""
        return math.ceil((self.halo_um or self.max_fibre_diameter_um) / pixel_size_um)


class SegmentConfig(_Section):
    """Distributed segmentation with exact stitching (``nclsm-scale segment``)."""

    level: int | None = Field(None, ge=0, description="Pyramid level; None = nearest the target.")
    target_pixel_size_um: float = Field(1.0, gt=0.0, description="Preferred segmentation pixel size.")
    resample_above: float = Field(
        1.5, ge=1.0,
        description="A segmentation level coarser than the target by more than this factor is resampled "
        "to the target for the network (a virtual level); labels stay at the slide's level.",
    )
    smooth_sigma_um: float = Field(
        2.0, ge=0.0, le=50.0, description="Gaussian smoothing of the distance map before seeding."
    )
    seed_radius_um: float = Field(
        10.0, gt=0.0, le=200.0,
        description="A seed is the largest distance value within this radius (about the smallest fibre radius).",
    )
    min_seed_value: float = Field(
        0.35, ge=0.0, le=4.0,
        description="Smoothed distance value (map units, 1 on a fibre's axis) above which pixels form a fibre core.",
    )
    min_core_area_um2: float = Field(
        15.0, ge=0.0, description="Smallest fibre core; smaller high-distance specks seed nothing."
    )
    foreground_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Foreground probability above which a pixel is fibre."
    )
    boundary_threshold: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Boundary probability above which a pixel is not fibre (1 keeps the outline "
        "pixels, which the network marks as the fibre's own outermost ring).",
    )
    region_pixel_size_um: float = Field(
        8.0, gt=0.0, description="Pixel size of the level the tissue mask is computed on."
    )
    region_smooth_um: float = Field(
        25.0, ge=0.0, description="Smoothing of the image before the tissue threshold."
    )
    maps: str | None = Field(
        None, description="Stored (K, y, x) maps zarr array to segment instead of running the network."
    )
    overwrite: bool = Field(False, description="Redo a slide that is already segmented.")
    max_memory_gib: float = Field(
        8.0, gt=0.0,
        description="Largest memory one step may need for a slide: a block task's window with its halo at the "
        "escalation limit, or the whole regions level (tissue and fold masks). A slide needing more is refused "
        "before its segmentation starts, naming the estimate.",
    )


_WALLTIME_PATTERN = r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$"


class SlurmConfig(_Section):
    """SLURM batch jobs as Dask workers (``cluster.kind: slurm``, dask-jobqueue ``SLURMCluster``).

    Each job runs one worker process (one per GPU); keys left at ``None`` fall back to
    dask-jobqueue's own configuration (``jobqueue.slurm`` in ``jobqueue.yaml``).
    """

    queue: str | None = Field(None, description="Partition (#SBATCH -p); None = the site's default.")
    account: str | None = Field(None, description="Account charged (#SBATCH -A); None = the user's default.")
    walltime: str = Field(
        "04:00:00", pattern=_WALLTIME_PATTERN, description="Job time limit, [D-]HH:MM:SS (#SBATCH -t)."
    )
    cores: int = Field(8, ge=1, le=1024, description="CPU cores per job; each worker runs cores/processes threads.")
    memory: str = Field("64GB", description="Memory per job, e.g. 64GB (#SBATCH --mem, rounded up to GiB).")
    processes: int = Field(1, ge=1, le=256, description="Worker processes per job; must be 1 with gpu.")
    gpu: bool = Field(False, description="Request one GPU per job and tag its worker with the Dask resource GPU=1.")
    gpu_directive: str = Field(
        "--gres=gpu:1", description="The site's #SBATCH request for one GPU (e.g. --gpus=1, --gres=gpu:a100:1)."
    )
    min_jobs: int = Field(0, ge=0, description="Fewest jobs kept while adapting to the work queued.")
    max_jobs: int = Field(8, ge=1, description="Most jobs at once; min_jobs == max_jobs keeps a fixed count.")
    lifetime_margin_min: int = Field(
        5, ge=1, description="Workers retire this many minutes before the walltime so their work moves elsewhere."
    )
    lifetime_stagger_min: int = Field(
        4, ge=0, description="Random spread of the retirement times; must be below lifetime_margin_min."
    )
    local_directory: str | None = Field(
        "${TMPDIR:-/tmp}", description="Node-local scratch for spilled data (expanded by the job's shell)."
    )
    job_script_prologue: list[str] = Field(
        [], description="Shell lines run before the worker starts, e.g. 'module load cuda', 'source venv/bin/activate'."
    )
    job_extra_directives: list[str] = Field([], description="Further #SBATCH options, e.g. '--constraint=a100'.")
    python: str | None = Field(None, description="Python on the compute nodes; None = this interpreter's path.")
    interface: str | None = Field(None, description="Network interface of workers and scheduler, e.g. ib0.")
    log_directory: str | None = Field(None, description="Folder for the jobs' stdout/stderr files.")
    job_name: str = Field("nclsm-worker", description="SLURM job name (#SBATCH -J).")

    @field_validator("walltime", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 12:00:00 as the integer 43200 (seconds): turn it back.
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return f"{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"
        return value

    @model_validator(mode="after")
    def _one_process_per_gpu(self) -> SlurmConfig:
        # Checks between keys that a preset and a --set may give separately (min_jobs <= max_jobs,
        # the lifetime margins) run when the cluster starts: nclsm_scale.cluster.slurm_cluster_kwargs.
        if self.gpu and self.processes != 1:
            raise ValueError("cluster.slurm.gpu needs processes: 1 (one worker process per GPU, one GPU per job)")
        return self


class KubernetesConfig(_Section):
    """A Dask cluster made by the Dask Kubernetes operator (``cluster.kind: kubernetes``).

    The default worker group is CPU-only and adapts between ``min_workers`` and
    ``max_workers``; ``gpu_workers`` adds a fixed group of GPU workers (the operator's
    autoscaler only scales the default group). The scheduler never requests a GPU.
    Checks between keys run when the cluster starts
    (:func:`nclsm_scale.cluster.kube_cluster_spec`).
    """

    image: str | None = Field(
        None, description="Image with nclsm-scale and the same dask/distributed versions as this client."
    )
    namespace: str | None = Field(None, description="Namespace; None = the kubeconfig's current namespace.")
    name_prefix: str = Field(
        "nclsm", pattern=r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$",
        description="DaskCluster name prefix; a random suffix makes each run's cluster its own.",
    )
    scheduler_cpu: str = Field("1", description="Scheduler CPU request (Kubernetes quantity).")
    scheduler_memory: str = Field("4Gi", description="Scheduler memory request and limit (Kubernetes quantity).")
    worker_cores: int = Field(4, ge=1, le=256, description="CPU request of each worker; also its thread count.")
    worker_memory: str = Field("16Gi", description="Memory request and limit of each worker (Kubernetes quantity).")
    min_workers: int = Field(0, ge=0, description="Fewest CPU workers kept while adapting to the work queued.")
    max_workers: int = Field(4, ge=0, description="Most CPU workers; min_workers == max_workers keeps a fixed count.")
    gpu_workers: int = Field(0, ge=0, description="Workers with one GPU each (a separate, fixed-size group).")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource a GPU worker requests.")
    gpu_node_selector: dict[str, str] = Field({}, description="Node labels GPU workers must run on.")
    env: dict[str, str] = Field({}, description="Environment variables of the scheduler and workers.")
    resource_timeout_s: int = Field(
        300, ge=10, description="Seconds to wait for the operator and the scheduler pod before giving up."
    )


class ClusterConfig(_Section):
    """Where Dask work runs: this machine, a running scheduler, SLURM jobs or Kubernetes.

    :func:`nclsm_scale.cluster.open_client` turns it into a client; presets
    ``slurm`` and ``kubernetes`` show the two batch back ends.
    """

    kind: Literal["local", "address", "slurm", "kubernetes"] = Field(
        "local",
        description="local: workers on this machine; address: an existing scheduler; slurm: SLURM jobs "
        "(cluster.slurm); kubernetes: the Dask operator (cluster.kubernetes).",
    )
    address: str | None = Field(None, description="Scheduler address for kind=address.")
    n_workers: int | None = Field(
        None, ge=1, description="Local workers, GPU workers included; None = one per core (per threads_per_worker)."
    )
    threads_per_worker: int = Field(1, ge=1, description="Threads per local worker.")
    memory_limit: str = Field("auto", description="Memory limit per local worker (auto = an equal share).")
    local_gpus: int | None = Field(
        None, ge=0,
        description="Local workers that each own one GPU (resource GPU=1); None = one per CUDA device torch "
        "sees (0 when model.device is cpu), 0 = none.",
    )
    dashboard_address: str = Field(
        "127.0.0.1:8787",
        description="Scheduler dashboard (and Prometheus /metrics) bind address of a local cluster, HOST:PORT; "
        "when the port is taken a free one is used (logged). 0.0.0.0:8787 opens it to the network, :0 always "
        "picks a free port.",
    )
    close_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0,
        description="Seconds a local worker process may take to exit when the cluster closes (a process that "
        "imported torch can need several seconds on a busy machine) before its nanny kills it.",
    )
    slurm: SlurmConfig = Field(SlurmConfig(), description="Settings for kind=slurm.")
    kubernetes: KubernetesConfig = Field(KubernetesConfig(), description="Settings for kind=kubernetes.")

    @model_validator(mode="after")
    def _address_needed(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs cluster.address, e.g. tcp://host:8786")
        return self


class MeasureConfig(_Section):
    """Per-fibre measurements (``nclsm-scale measure``)."""

    ring_width_um: float = Field(
        2.0, gt=0.0, le=50.0, description="Width of the membrane band inside each fibre outline."
    )
    tissue_margin_um: float = Field(
        4.0, ge=0.0, le=100.0, description="Width of the outer ring around each fibre tested against the tissue mask."
    )
    tissue_border_min_fraction: float = Field(
        0.3, gt=0.0, le=1.0,
        description="A fibre touches the tissue border (is cut by it) when at least this share of its outer ring "
        "lies outside tissue.",
    )
    hole_smooth_um: list[float] = Field(
        [0.5, 1.0, 2.0], min_length=1,
        description="Gaussian sigmas of the cytoplasm signal (mito, else the brightest myosin channel) before hole "
        "detection; each fibre is read at the finest one its pixel noise allows (see hole_noise_z).",
    )
    hole_ratio: float = Field(
        0.35, gt=0.0, lt=1.0,
        description="A pixel is in a hole (an ice crystal: empty, near background) when its background-subtracted "
        "cytoplasm signal is below this share of its fibre's median; ordinary texture stays above it.",
    )
    hole_noise_z: float = Field(
        3.0, ge=0.0, le=20.0,
        description="A smoothing is fine enough for a fibre when the drop to hole_ratio x median is this many smoothed "
        "noise deviations deep.",
    )
    hole_min_um2: float = Field(
        2.0, ge=0.0, description="Smallest hole counted (at least 3 pixels at any pixel size)."
    )
    hole_texture_z: float = Field(
        1.0, ge=0.0, le=20.0,
        description="A hole also lies this many robust deviations of the fibre's own texture below its median, "
        "so mottled texture is not read as holes.",
    )
    ridge_sigma_um: float = Field(
        1.0, gt=0.0, le=10.0,
        description="Gaussian scale of the membrane ridge (line) filter, about a sarcolemma's width.",
    )
    ridge_exclusion_um: float = Field(
        5.0, gt=0.0, le=100.0,
        description="Interior ridges are looked for this far inside the outline (clear of the fibre's own sarcolemma).",
    )
    ridge_ratio: float = Field(
        0.5, gt=0.0, le=10.0,
        description="An interior ridge counts when at least this share of the fibre's own sarcolemma ridge strength.",
    )
    ridge_noise_z: float = Field(
        4.0, ge=0.0, le=20.0,
        description="... and this many robust deviations above the median ridge response of the fibre's interior.",
    )

    @model_validator(mode="after")
    def _smoothing_ascending(self) -> MeasureConfig:
        s = self.hole_smooth_um
        if any(v < 0 or v > 20.0 for v in s) or any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ValueError(f"hole_smooth_um must be ascending sigmas in [0, 20] um, got {s}")
        return self


class CurateConfig(_Section):
    """Curation rules: AM or a rejection reason per fibre (``nclsm-scale curate``); human defaults."""

    debris_max_um2: float = Field(150.0, ge=0.0, description="Fibres smaller than this are DEBRIS.")
    qc_min_tissue_um2: float = Field(
        10000.0, ge=0.0,
        description="Slide QC: less tissue than this (a 100 um square: a few fibres) flags the slide no_tissue.",
    )
    qc_min_membrane_contrast: float = Field(
        0.2, ge=-1.0, le=1.0,
        description="Slide QC: a median fibre membrane contrast (ring - interior) / (ring + interior) below this "
        "flags the slide no_membrane_contrast. A membrane stain outlines fibres at several times their interior "
        "(0.2 is 1.5x); noise and blank slides give about 0.",
    )
    edge_image_border: bool = Field(True, description="Reject fibres cut by the image border (EDGE).")
    edge_tissue_border: bool = Field(True, description="Reject fibres touching non-tissue (EDGE).")
    fr_method: Literal["model", "rules"] = Field(
        "model",
        description="How FR is decided where interior ridges can be judged: 'model', the bundled gradient-boosted "
        "trees over the fold share, ridges, membrane and cytoplasm against the neighbours' and shape "
        "(curate/fr_model.py); 'rules', the fold and ridge thresholds below (also the fallback without a model, "
        "and what decides where ridges cannot be judged).",
    )
    fr_neighbours: int = Field(
        32, ge=4, le=1000,
        description="FR model: the nearest fibres (outside detected folds) whose median intensities a fibre is "
        "compared with.",
    )
    fr_min_interior_membrane: float = Field(
        0.03, gt=0.0, le=1.0,
        description="FR rules: fibres with at least this share of their interior on membrane ridges "
        "(interior_membrane_fraction: a folded second layer's sarcolemma crosses them) are FR.",
    )
    fr_min_fold_fraction: float = Field(
        0.3, gt=0.0, le=1.0,
        description="Fibres with at least this share in a detected (low-resolution) fold are FR when they also show "
        "interior membrane (fr_min_interior_membrane_in_fold; FR rules), or alone when the ridges cannot be judged "
        "(either method). The FR model's neighbour references leave such fibres out.",
    )
    fr_min_interior_membrane_in_fold: float = Field(
        0.007, ge=0.0, le=1.0,
        description="FR rules: interior membrane share that suffices for FR inside a detected fold.",
    )
    fr_ridge_max_pixel_size_um: float = Field(
        1.5, gt=0.0, le=50.0,
        description="Interior membrane ridges are judged only at pixels this fine or finer (a sarcolemma is ~1 um).",
    )
    fam_min_holes: int = Field(
        3, ge=1, le=1000, description="FAM needs at least this many holes (hole_count) ..."
    )
    fam_min_hole_fraction: float = Field(
        0.01, gt=0.0, le=1.0, description="... covering at least this share of the interior (hole_fraction)."
    )
    fam_max_pixel_size_um: float = Field(
        1.5, gt=0.0, le=50.0,
        description="FAM is judged only at pixels this fine or finer (ice-crystal holes are a few um across).",
    )
    nf_max_cytoplasm: float = Field(
        0.15, gt=0.0, le=1.0,
        description="An object whose cytoplasm signal is below this share of the slide's fibres' (their 75th "
        "percentile) is NF, not a fibre: interstitium, vessel or background cut into a segment.",
    )
    ntm_min_aspect_ratio: float = Field(
        1.5, gt=1.0, le=20.0,
        description="NTM needs an ellipse aspect ratio of at least this ...",
    )
    ntm_relative_aspect_ratio: float = Field(
        1.45, gt=1.0, le=20.0,
        description="... and of at least this many times the slide's transverse reference (25th percentile of whole "
        "fibres) ...",
    )
    ntm_max_reference_aspect_ratio: float = Field(
        1.4, gt=1.0, le=20.0,
        description="The transverse reference is at most this: on a slide cut mostly obliquely the rounder quarter "
        "is oblique too.",
    )
    ntm_min_field_aspect_ratio: float = Field(
        1.15, gt=1.0, le=20.0,
        description="... and a neighbourhood coherently elongated by at least this (oblique sectioning is a "
        "property of the fascicle) ...",
    )
    ntm_alone_factor: float = Field(
        1.25, ge=1.0, le=10.0,
        description="... unless the fibre's own aspect ratio is this many times the threshold (clearly oblique alone).",
    )
    ntm_cut_field_aspect_ratio: float = Field(
        1.4, gt=1.0, le=20.0,
        description="A fibre cut by the image border is NTM when its neighbourhood is elongated by at least this.",
    )
    ntm_field_radius_diameters: float = Field(
        2.0, gt=0.0, le=50.0,
        description="Radius of the neighbourhood of the coherent elongation, in the slide's median fibre diameters.",
    )
    fold_min_ratio: float = Field(
        1.5, gt=1.0, le=10.0,
        description="Fold seed: both channels at least this many times their shading-corrected local tissue reference.",
    )
    fold_low_ratio: float = Field(
        1.25, gt=1.0, le=10.0,
        description="Fold extent (hysteresis): connected tissue with both channel ratios at least this.",
    )
    fold_smooth_um: float = Field(24.0, ge=0.0, le=1000.0, description="Smoothing before the fold threshold.")
    fold_reference_um: float = Field(
        250.0, gt=0.0, le=10000.0,
        description="Gaussian sigma of the local tissue reference (several fold widths; removes shading).",
    )
    fold_min_area_um2: float = Field(
        5000.0, ge=0.0, description="Smallest fold region kept (smaller bright patches are dropped)."
    )
    napari_max_fibres: int = Field(
        200_000, ge=0,
        description="Write each fibre's class colour, class, reasons, confidence and key measurements into the "
        "image-label metadata of labels/fibres, which napari-ome-zarr shows, on slides with at most this many fibres "
        "(0: never). The metadata takes about 210 bytes a fibre in the label group's zarr.json, which every reader "
        "of the group parses.",
    )


class AggregateConfig(_Section):
    """Per-slide and per-archive statistics (``aggregate``, part of ``report`` and ``curate``)."""

    analysable_classes: list[str] = Field(
        ["AM"], min_length=1, description="Classes whose fibres enter the size and intensity statistics."
    )
    csa_bins_um2: list[float] = Field(
        [0.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0, 15000.0],
        min_length=2,
        description="CSA histogram bin edges (MuscleJ2 bins extended for human fibres); the last bin is open.",
    )
    feret_min_bins_um: list[float] = Field(
        [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 120.0, 150.0],
        min_length=2, description="Min-Feret histogram bin edges; the last bin is open.",
    )
    mito_rel_bins: list[float] = Field(
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0],
        min_length=2,
        description="Bin edges of the mito interior mean relative to the slide's analysable median; last bin open.",
    )
    group_by: list[str] = Field(
        ["subject", "diagnosis", "muscle"],
        description="Manifest columns the archive table is grouped by (those present are used).",
    )

    @model_validator(mode="after")
    def _bins_increase(self) -> AggregateConfig:
        for name in ("csa_bins_um2", "feret_min_bins_um", "mito_rel_bins"):
            edges = getattr(self, name)
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] < 0:
                raise ValueError(f"{name} must be non-negative and strictly increasing, got {edges}")
        return self


class ReportConfig(_Section):
    """The HTML report and exports (``nclsm-scale report``)."""

    thumbnail_px: int = Field(
        1200, ge=128, le=8192, description="Longer side of the slide thumbnails (the finest level that fits)."
    )
    figure_dpi: int = Field(100, ge=50, le=400, description="Resolution of the matplotlib figures.")
    geojson: bool = Field(True, description="Export fibres with their class as GeoJSON polygons for QuPath.")
    geojson_tolerance_px: float = Field(
        0.5, ge=0.0, le=10.0, description="Polygon simplification tolerance (segmentation-level pixels)."
    )


class ViewConfig(_Section):
    """The slide viewer (``nclsm-scale view``)."""

    host: str = Field("127.0.0.1", description="Address the viewer binds (127.0.0.1: this machine only; reach it "
                      "from elsewhere through ssh -L or kubectl port-forward).")
    port: int = Field(8765, ge=0, le=65535, description="Port of the viewer (0: any free port).")
    tile_px: int = Field(512, ge=64, le=4096, description="Edge of the image and overlay tiles served.")
    image_format: Literal["jpeg", "png"] = Field(
        "jpeg", description="Format of the image tiles the page asks for: jpeg (small, for port-forwards) or png "
        "(lossless); overlay tiles are always PNG."
    )
    jpeg_quality: int = Field(90, ge=50, le=100, description="Quality of JPEG image tiles.")
    outline_px: int = Field(
        2, ge=1, le=4, description="Width of the fibre outlines in pixels of the level a tile is drawn from."
    )


class ArchiveConfig(_Section):
    """The archive a run reads and how ``nclsm-scale run`` goes through it."""

    extensions: list[str] = Field(
        [".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".ndpi", ".btf", ".qptiff", ".scn",
         ".png", ".jpg", ".jpeg", ".ome.zarr"],
        description="File name endings (case-insensitive) taken as slides when discovering a folder.",
    )
    exclude: list[str] = Field(
        ["*.fibres.ome.tiff", "*.regions.ome.tiff"],
        description="Glob patterns of file names never taken as slides (ground-truth sidecars).",
    )
    manifest: str | None = Field(
        None, description="CSV or Parquet with a 'path' column plus metadata columns; None discovers the folder."
    )
    allow_absolute_paths: bool = Field(
        False, description="Let manifest paths be absolute or leave the manifest's folder."
    )
    retries: int = Field(1, ge=0, le=10, description="Reruns of a slide stage after an unexpected error.")
    max_concurrent_slides: int = Field(2, ge=1, le=64, description="Slides in flight at once on the cluster.")
    storage_options: dict[str, Any] = Field(
        {}, description="fsspec options for s3:// (or other URL) archives and runs, e.g. {endpoint_url: ..., anon: "
        "true}; prefer credentials from the environment (AWS_ACCESS_KEY_ID, ...): run.json redacts secret-looking keys."
    )
    work_dir: str | None = Field(
        None, description="Local folder under which a run with a remote --out is staged, one sub-folder per run URL; "
        "None: ~/.cache/nclsm-scale/runs. On a cluster every worker must read and write it (a shared volume)."
    )
    keep_inputs: bool = Field(
        False, description="Keep each slide downloaded from a remote archive in inputs/ after its convert stage."
    )


class RunConfig(_Section):
    """Everything a run can be configured with; one section per stage."""

    synth: SynthConfig = SynthConfig()
    convert: ConvertConfig = ConvertConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    grid: GridConfig = GridConfig()
    segment: SegmentConfig = SegmentConfig()
    cluster: ClusterConfig = ClusterConfig()
    measure: MeasureConfig = MeasureConfig()
    curate: CurateConfig = CurateConfig()
    aggregate: AggregateConfig = AggregateConfig()
    report: ReportConfig = ReportConfig()
    view: ViewConfig = ViewConfig()
    archive: ArchiveConfig = ArchiveConfig()

    @model_validator(mode="after")
    def _no_gpu_workers_for_cpu_inference(self) -> RunConfig:
        # with model.device=cpu, GPU-pinned local workers would only cap network tasks at one per GPU
        if self.model.device == "cpu" and self.cluster.local_gpus is None:
            self.cluster.local_gpus = 0
        return self


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


#: Keys that moved to another section: old dotted key -> new dotted key.
MOVED_KEYS = {
    **{f"segment.{k}": f"grid.{k}" for k in GridConfig.model_fields},
    "measure.dark_smooth_um": "measure.hole_smooth_um",
    "measure.dark_ratio": "measure.hole_ratio",
    "measure.dark_noise_z": "measure.hole_noise_z",
    "measure.dark_min_blob_um2": "measure.hole_min_um2",
}


def _format_errors(exc: pydantic.ValidationError, origin: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p != "__root__"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden" and key in MOVED_KEYS:
            lines.append(f"key '{key}' has moved: set '{MOVED_KEYS[key]}' instead.")
        elif err["type"] == "extra_forbidden":
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

    >>> parse_set_option("grid.block_px=512")
    ('grid.block_px', 512)
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. grid.block_px=512.")
    if not value.strip():
        raise ConfigError(f"--set {text!r}: no value given for {key.strip()!r}; give one, or leave the option out "
                          "to keep the configured value.")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def load_config(
    sources: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Load a :class:`RunConfig` from YAML files and dotted overrides.

    Parameters
    ----------
    base : mapping, optional
        A whole or partial config applied first (a run's recorded config, ``run.json``).
    sources : sequence of path or preset name
        Applied in order over the defaults; later files win.
    overrides : mapping of dotted key to value, optional
        Command-line values (``{"grid.block_px": 512}``); ``None`` values are
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
    if base is not None:
        try:
            RunConfig.model_validate(base)
        except pydantic.ValidationError as exc:
            raise _format_errors(exc, "the recorded config") from None
        merged = _merge(merged, base)
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
