"""The tables' vocabulary: every table column, curation class, reason and label value, declared once.

Columns are declared name -> dtype, unit and meaning (:class:`Column`); the
writers put unit and meaning into each Parquet field's metadata and the table
schema's version (:data:`SCHEMA_VERSION`) into the file's. Every per-fibre table
starts with :data:`KEY_COLUMNS` (``slide``, ``fibre_id``). ``measure`` writes
:data:`MEASURE_COLUMNS` and, for every image channel, the statistics of
:data:`CHANNEL_STATS` (:func:`measure_columns`); ``curate`` writes
:data:`CURATE_COLUMNS`; the per-fibre table users read joins both, after the
slide's manifest metadata (:func:`join_fibre_tables`, column order
:func:`fibre_columns`). ``aggregate`` writes :data:`SLIDE_COLUMNS` and
:data:`GROUP_COLUMNS`.

Frames: ``_px`` coordinates (centroid, bounding box) are **level-0 slide pixels**,
the frame of the image's level 0, ``labels/fibres`` level 0 and the GeoJSON export,
with pixel centres at integer positions (the NGFF convention); ``_seg_px`` counts
are pixels of the segmentation level the fibres were measured at; ``_um`` values
are physical, so ``centroid_y_um = centroid_y_px * pixel_size_um`` with the level-0
pixel size, the NGFF physical coordinate. A level of downsample ``f`` maps its
pixel ``c`` to level-0 ``(c + 0.5) * f - 0.5``.

:class:`FibreClass` is the curation vocabulary: AM (analysable) and the
rejection reasons, each with its priority, display colour and meaning, so a new
reason is added in one place. The label images' values live here too
(:data:`TISSUE` in ``labels/regions``, :data:`FOLD` in ``labels/folds``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

__all__ = [
    "CURATE_COLUMNS",
    "Column",
    "CHANNEL_STATS",
    "FIBRE_TYPES",
    "TYPE_KEYS",
    "FOLD",
    "FOLD_COLORS",
    "FibreClass",
    "GROUP_COLUMNS",
    "KEY_COLUMNS",
    "MEASURE_COLUMNS",
    "PRIORITY",
    "QC_COLUMNS",
    "REGION_COLORS",
    "SCHEMA_VERSION",
    "SLIDE_COLUMNS",
    "SUMMARY_COLUMNS",
    "TISSUE",
    "channel_columns",
    "channel_keys",
    "empty_table",
    "fibre_column",
    "fibre_columns",
    "join_fibre_tables",
    "manifest_columns",
    "measure_columns",
    "table_from_columns",
]


class FibreClass(StrEnum):
    """Curation classes: AM (analysable) or a rejection reason code (NCL-SM scheme plus EDGE and DEBRIS).

    Each member carries ``priority`` (rejections: the first that applies is a
    fibre's primary class; None for AM), ``rgb`` (display colour, also in the
    GeoJSON export, the viewer and the report; the Okabe-Ito colour-blind-safe palette, greys for
    the non-fibres) and ``meaning``. Members are listed in the order tables and
    plots show them. QC, the slide-level rejection of a slide that failed quality
    control, has no priority either: no per-fibre rule decides it, and it overrides them all.
    """

    priority: int | None
    rgb: tuple[int, int, int]
    meaning: str

    def __new__(cls, code: str, priority: int | None, rgb: tuple[int, int, int], meaning: str) -> FibreClass:
        """Member ``code`` with its priority, colour and meaning."""
        obj = str.__new__(cls, code)
        obj._value_ = code
        obj.priority = priority
        obj.rgb = rgb
        obj.meaning = meaning
        return obj

    AM = ("AM", None, (0, 158, 115), "analysable")
    QC = ("QC", None, (86, 180, 233), "on a slide that failed quality control (the slide table's qc_flag)")
    NF = ("NF", 0, (90, 90, 90), "not a fibre: interstitium, vessel or background (no fibre cytoplasm)")
    DEBRIS = ("DEBRIS", 1, (170, 170, 170), "too small to be a fibre")
    EDGE = ("EDGE", 2, (0, 114, 178), "cut by the image or tissue border")
    FR = ("FR", 3, (213, 94, 0), "in a folded region of the section")
    FAM = ("FAM", 4, (204, 121, 167), "freeze artefact")
    NTM = ("NTM", 5, (240, 228, 66), "non-transverse (oblique or longitudinal profile)")


#: Rejection reasons in priority order (the first that applies is the primary class).
PRIORITY: tuple[FibreClass, ...] = tuple(
    sorted((c for c in FibreClass if c.priority is not None), key=lambda c: c.priority or 0)
)

#: Fibre types from the myosin heavy-chain channels, in the order tables and plots show them.
FIBRE_TYPES = ("I", "IIa", "IIx", "I/IIa", "IIa/IIx", "unclassified")
#: Key of each fibre type in column names (``type_I_IIa_pct``, ...).
TYPE_KEYS = {t: t.replace("/", "_") for t in FIBRE_TYPES}

#: ``labels/regions`` value of tissue (0 is background).
TISSUE = 1
#: ``image-label`` colours (RGBA) of ``labels/regions``.
REGION_COLORS = {0: (0, 0, 0, 0), TISSUE: (0, 160, 255, 96)}
#: ``labels/folds`` value of folded tissue (0 is none), written by ``curate``.
FOLD = 1
#: ``image-label`` colours (RGBA) of ``labels/folds``.
FOLD_COLORS = {0: (0, 0, 0, 0), FOLD: (255, 140, 0, 128)}


@dataclass(frozen=True)
class Column:
    """One table column: numpy dtype name, unit ("" when dimensionless) and meaning."""

    dtype: str
    unit: str
    description: str


_C = Column

#: Version of the tables' schema (columns, dtypes, frames), in every file's metadata; raised on any change.
SCHEMA_VERSION = 2

#: Columns that key every per-fibre table, first in each.
KEY_COLUMNS: dict[str, Column] = {
    "slide": _C("str", "", "Slide name in the run (its tables' file names; the manifest's slide)."),
    "fibre_id": _C("uint32", "", "Fibre label ID in labels/fibres."),
}

MEASURE_COLUMNS: dict[str, Column] = {
    **KEY_COLUMNS,
    "area_seg_px": _C("int64", "px", "Pixel count at the segmentation level (segmentation_pixel_size_um)."),
    "area_um2": _C("float64", "um2", "Cross-sectional area (CSA): pixel count x pixel area."),
    "perimeter_um": _C(
        "float64",
        "um",
        "Outline length, skimage.measure.perimeter estimator (4-neighbourhood border pixels, "
        "weights 1, sqrt2, (1+sqrt2)/2 by local configuration; runs through border pixel centres).",
    ),
    "perimeter_border_seg_px": _C(
        "int64", "px",
        "Number of 4-connected border pixels at the segmentation level (mahotas bwperim n=4 count, as NCL-SM).",
    ),
    "convex_area_um2": _C(
        "float64", "um2", "Area of the convex hull of the pixel corners (polygon area, >= area)."
    ),
    "convex_perimeter_um": _C(
        "float64", "um", "Perimeter of the convex hull of the pixel centres (= corner hull - 4 px)."
    ),
    "solidity": _C("float64", "", "area / convex_area (<= 1)."),
    "hull_area_ratio": _C(
        "float64", "", "convex_area / area = 1 / solidity; NCL-SM's 'Convexity' (NTM rule < 1.19)."
    ),
    "convexity": _C(
        "float64",
        "",
        "convex_perimeter / perimeter (ImageJ Shape Filter 'convexity', ~1 if convex).",
    ),
    "circularity": _C("float64", "", "4*pi*area / perimeter**2 (ImageJ 'Circ.'; 1 = circle)."),
    "equivalent_diameter_um": _C("float64", "um", "Diameter of the circle of the same area."),
    "feret_min_um": _C(
        "float64",
        "um",
        "Minimum Feret (caliper) diameter of the pixel-corner convex hull (rotating calipers).",
    ),
    "feret_max_um": _C("float64", "um", "Maximum Feret diameter of the pixel-corner convex hull."),
    "feret_aspect_ratio": _C("float64", "", "feret_max / feret_min."),
    "ellipse_major_um": _C(
        "float64", "um", "Major axis of the ellipse with the same second moments (4*sqrt(l1))."
    ),
    "ellipse_minor_um": _C("float64", "um", "Minor axis of the same-moments ellipse (4*sqrt(l2))."),
    "ellipse_aspect_ratio": _C("float64", "", "ellipse_major / ellipse_minor (inf for a line)."),
    "eccentricity": _C("float64", "", "sqrt(1 - l2/l1) of the same-moments ellipse."),
    "orientation_deg": _C(
        "float64",
        "deg",
        "Major-axis angle from the +x (column) axis, counter-clockwise as displayed (y down), "
        "in (-90, 90].",
    ),
    "centroid_y_px": _C("float64", "px", "Centroid row in level-0 slide pixels (pixel centres at integers)."),
    "centroid_x_px": _C("float64", "px", "Centroid column in level-0 slide pixels (pixel centres at integers)."),
    "centroid_y_um": _C("float64", "um", "Centroid row from the slide origin: centroid_y_px x level-0 pixel size."),
    "centroid_x_um": _C("float64", "um", "Centroid column from the slide origin: centroid_x_px x level-0 pixel size."),
    "bbox_y0_px": _C("int64", "px", "Bounding box first row, level-0 slide pixels."),
    "bbox_x0_px": _C("int64", "px", "Bounding box first column, level-0 slide pixels."),
    "bbox_y1_px": _C("int64", "px", "Bounding box end row (exclusive), level-0 slide pixels."),
    "bbox_x1_px": _C("int64", "px", "Bounding box end column (exclusive), level-0 slide pixels."),
    "touches_image_border": _C("bool", "", "The fibre has a pixel on the slide's outer edge."),
    "touches_tissue_border": _C(
        "bool",
        "",
        "A fibre pixel lies within tissue_margin_um of non-tissue (False without a mask).",
    ),
    "cytoplasm_interior_median": _C(
        "float64", "",
        "Median inside the band of the cytoplasm signal: the mito channel, else the brightest myosin heavy-chain "
        "channel pixel by pixel, each minus its background and divided by its range (the slide's 99.5th minus 1st "
        "percentile), so 1 is about the slide's brightest fibres. NaN without a mito or myosin channel.",
    ),
    "hole_fraction": _C(
        "float64", "",
        "Share of the interior in holes (ice crystals of freeze artefacts): smoothed cytoplasm signal below "
        "hole_ratio x the fibre's interior median, holes >= hole_min_um2; smoothed at the finest sigma of "
        "hole_smooth_um the fibre's pixel noise allows (hole_noise_z). NaN without a cytoplasm signal.",
    ),
    "hole_count": _C("int64", "", "Number of such holes inside the fibre."),
    "interior_membrane_fraction": _C(
        "float64",
        "",
        "Share of the interior more than ridge_exclusion_um inside the outline that lies on membrane ridges at "
        "least ridge_ratio x the fibre's own sarcolemma ridge strength and ridge_noise_z robust deviations above "
        "its interior (a second layer's sarcolemma crossing the fibre: folds). NaN without a membrane channel or "
        "deep interior.",
    ),
    "membrane_interior_p75": _C(
        "float64", "counts",
        "75th percentile of the membrane channel inside the band of ring_width_um along the outline, minus the "
        "slide's background (a fold's second layer over part of the fibre raises it before the median). NaN "
        "without a membrane channel.",
    ),
}

CURATE_COLUMNS: dict[str, Column] = {
    **KEY_COLUMNS,
    "fold_fraction": _C(
        "float64", "", "Share of the fibre's pixels inside the detected fold mask (labels/folds)."
    ),
    "field_aspect_ratio": _C(
        "float64", "",
        "Coherent elongation of the neighbouring fibres: the aspect ratio they share in one direction "
        "(1 = none); the NTM rule's neighbourhood term.",
    ),
    "aligned_aspect_ratio": _C(
        "float64", "",
        "The fibre's own ellipse aspect ratio along its neighbourhood's direction, exp(log(AR) cos(2 dtheta)).",
    ),
    "relative_aspect_ratio": _C(
        "float64", "",
        "Ellipse aspect ratio over the slide's transverse reference (25th percentile of whole fibres); NTM's feature.",
    ),
    "cytoplasm_rel": _C(
        "float64", "",
        "cytoplasm_interior_median over the slide's fibres' (their 75th percentile); NF's feature. NaN without one.",
    ),
    **{f"score_{c.value}": _C(
        "float64", "",
        f"Score of the {c.value} rule: its feature's log ratio to the threshold (>= 0: {c.meaning}); NaN: not judged."
        + (" With the FR model (curate.fr_method), its log-odds over the model's threshold." if c is FibreClass.FR
           else ""),
    ) for c in FibreClass if c.priority is not None},
    "curation_class": _C(
        "str",
        "",
        "Primary class: AM (analysable) or the first rejection reason in priority order (see tables.FibreClass).",
    ),
    "reasons": _C(
        "str", "", "All reason codes that apply, ';'-joined in priority order ('' for AM)."
    ),
    "confidence": _C(
        "float64", "",
        "Calibrated probability that curation_class is right (curate.calibration): the primary reason's, or for AM "
        "that no judged reason applies; 1 for a user override.",
    ),
    "not_judged": _C(
        "str", "",
        "Reasons the slide cannot judge, ';'-joined: no cytoplasm channel (NF), no mito channel (FAM) or pixels too "
        "coarse (FAM; FR then rests on the fold mask alone).",
    ),
    "fibre_type": _C(
        "str", "",
        "Fibre type from the myosin heavy-chain channels: I, IIa, IIx, I/IIa, IIa/IIx or unclassified; '' on a "
        "slide without them (curate.types).",
    ),
    "type_confidence": _C("float64", "", "Probability of the called fibre type (NaN without myosin channels)."),
    "overridden": _C("bool", "", "The class was set by a user override (confidence 1)."),
}

#: Slide-table columns of the slide quality control (``curate``, :mod:`nclsm_scale.curate.qc`).
QC_COLUMNS: dict[str, Column] = {
    "qc_flag": _C(
        "str", "",
        "Why the slide failed quality control, ';'-joined: no_tissue, no_fibres, no_membrane_contrast; '' when it "
        "passed. Every fibre of a flagged slide is class QC, so it has no analysable fibres.",
    ),
    "qc_tissue_fraction": _C("float64", "", "Share of the slide under the tissue mask (labels/regions)."),
    "qc_membrane_contrast": _C(
        "float64", "",
        "Median over fibres larger than DEBRIS of (ring - interior) / (ring + interior) of the membrane channel's "
        "medians: ~0.5-0.9 on muscle, ~0 on noise. NaN without a membrane channel or fibres.",
    ),
    "qc_focus": _C(
        "float64", "",
        "Share of the membrane channel's structure energy at 0.5-2 um among 0.5-8 um, noise subtracted, on tissue "
        "tiles at ~1 um/px: ~0.45-0.55 sharp (PSF sigma 0.5 um), ~0.3 at 1 um, ~0.1 at 2 um. NaN when not judged.",
    ),
    "qc_rejected_fraction": _C("float64", "", "Share of fibres the per-fibre rules reject (before the slide QC)."),
}

#: Statistics ``measure`` writes for every image channel, as ``<channel key>_<statistic>``
#: (:func:`channel_keys`), background-subtracted (the slide's low percentile, the normalisation's ``lo``).
CHANNEL_STATS: dict[str, tuple[str, str]] = {
    "interior_mean": ("counts", "mean inside the band of ring_width_um along the outline"),
    "interior_median": ("counts", "median inside the band of ring_width_um along the outline"),
    "ring_mean": ("counts", "mean in the band of ring_width_um inside the outline"),
    "ring_median": ("counts", "median in the band of ring_width_um inside the outline"),
}


def _moment_columns(prefix: str, unit: str, what: str) -> dict[str, Column]:
    return {
        f"{prefix}_mean": _C("float64", unit, f"Mean {what}."),
        f"{prefix}_median": _C("float64", unit, f"Median {what}."),
        f"{prefix}_sd": _C("float64", unit, f"Sample standard deviation (ddof 1) of the {what}."),
        f"{prefix}_cv": _C("float64", "", f"Coefficient of variation (SD / mean) of the {what}."),
    }


#: Summary of a set of fibres (a slide or a group; ``aggregate.summarise``); sizes and intensities over
#: the analysable fibres (``aggregate.analysable_classes``). The ``type_`` columns exist on typed slides only.
SUMMARY_COLUMNS: dict[str, Column] = {
    "n_fibres": _C("int64", "", "Fibres."),
    **{f"n_{c.value}": _C("int64", "", f"Fibres of primary class {c.value} ({c.meaning}).") for c in FibreClass},
    **{f"reason_{r.value}": _C("int64", "", f"Fibres reason {r.value} applies to, primary or not.")
       for r in PRIORITY},
    "n_overridden": _C("int64", "", "Fibres whose class a user override set."),
    "n_analysable": _C("int64", "", "Fibres of the analysable classes."),
    "pct_analysable": _C("float64", "%", "Share of the fibres that are analysable."),
    **_moment_columns("csa_um2", "um2", "cross-sectional area of the analysable fibres"),
    **_moment_columns("feret_min_um", "um", "minimum Feret diameter of the analysable fibres"),
    **_moment_columns("mito", "counts", "mito interior mean of the analysable fibres (minus background)"),
    "mito_p10": _C("float64", "counts", "10th percentile of the analysable fibres' mito interior mean."),
    "mito_p90": _C("float64", "counts", "90th percentile of the analysable fibres' mito interior mean."),
    "not_judged": _C("str", "", "Reasons judged for no fibre, ';'-joined."),
    "n_typed": _C("float64", "", "Analysable fibres of a called type (not unclassified)."),
    **{name: col for t, k in TYPE_KEYS.items() for name, col in {
        f"type_{k}_n": _C("float64", "", f"Analysable fibres of type {t}."),
        f"type_{k}_pct": _C("float64", "%", f"Share of type {t}: of the typed fibres (unclassified: of all)."),
        f"type_{k}_csa_um2_mean": _C("float64", "um2", f"Mean CSA of the analysable fibres of type {t}."),
        f"type_{k}_csa_um2_median": _C("float64", "um2", f"Median CSA of the analysable fibres of type {t}."),
    }.items()},
}

#: ``tables/slides.parquet``: one row per slide (then the manifest's metadata columns, :func:`manifest_columns`).
SLIDE_COLUMNS: dict[str, Column] = {
    "slide": KEY_COLUMNS["slide"],
    "slide_id": _C("str", "", "Slide id recorded by convert (usually the slide name)."),
    "pixel_size_um": _C("float64", "um", "Pixel size of the slide's level 0 (the frame of the _px columns)."),
    "segmentation_pixel_size_um": _C(
        "float64", "um", "Pixel size of the level the fibres were segmented and measured at (_seg_px columns)."
    ),
    "segmentation_level": _C("int64", "", "Pyramid level the fibres were segmented and measured at."),
    **SUMMARY_COLUMNS,
    "tissue_area_mm2": _C("float64", "mm2", "Tissue area (labels/regions)."),
    "fold_area_mm2": _C("float64", "mm2", "Folded tissue area (labels/folds)."),
    "analysable_area_mm2": _C("float64", "mm2", "Tissue minus folds."),
    "fibre_density_per_mm2": _C("float64", "1/mm2", "Fibres per tissue area."),
    "analysable_density_per_mm2": _C("float64", "1/mm2", "Analysable fibres per analysable area."),
    **QC_COLUMNS,
}

#: ``tables/groups.parquet``: one row per manifest group (``aggregate.group_by`` keys first), fibres pooled.
GROUP_COLUMNS: dict[str, Column] = {
    "n_slides": _C("int64", "", "Slides in the group."),
    **SUMMARY_COLUMNS,
    "tissue_area_mm2": _C("float64", "mm2", "Tissue area of the group's slides."),
    "analysable_area_mm2": _C("float64", "mm2", "Analysable area of the group's slides."),
}


def channel_keys(channel_names: Sequence[str], roles: Mapping[str, int]) -> list[str]:
    """Column prefix of each channel: its role (``membrane``, ``mito``, ``myh1``, ...), else its name.

    Names are lower-cased with every run of other characters than letters and
    digits made ``_``; a key that would repeat an earlier one gets the channel index.

    >>> channel_keys(["DAPI", "Laminin", "MyHC I"], {"membrane": 1, "myh1": 2})
    ['dapi', 'membrane', 'myh1']
    """
    by_index = {i: role for role, i in roles.items()}
    keys: list[str] = []
    for i, name in enumerate(channel_names):
        key = by_index.get(i) or re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or f"channel{i}"
        keys.append(f"{key}_{i}" if key in keys else key)
    return keys


def channel_columns(keys: Sequence[str]) -> dict[str, Column]:
    """The per-channel statistic columns of channels ``keys``."""
    return {
        f"{k}_{stat}": Column("float64", unit, f"Channel {k}: {meaning}, minus the slide's background.")
        for k in keys
        for stat, (unit, meaning) in CHANNEL_STATS.items()
    }


def measure_columns(keys: Sequence[str] = ()) -> dict[str, Column]:
    """Every column ``measure`` writes for a slide with channels ``keys``, in order."""
    return {**MEASURE_COLUMNS, **channel_columns(keys)}


def fibre_column(name: str) -> Column:
    """The declaration of a per-fibre table column: a key, ``measure``'s, a channel statistic or ``curate``'s.

    Raises
    ------
    KeyError
        When ``name`` is none of them.

    >>> fibre_column("mito_ring_mean").unit
    'counts'
    """
    for declared in (MEASURE_COLUMNS, CURATE_COLUMNS):
        if name in declared:
            return declared[name]
    for stat in CHANNEL_STATS:
        if name.endswith(f"_{stat}") and len(name) > len(stat) + 1:
            return channel_columns([name[: -len(stat) - 1]])[name]
    raise KeyError(f"{name!r} is not a declared fibre-table column")


def fibre_columns(measured: Sequence[str], metadata: Sequence[str] = ()) -> list[str]:
    """Column order of the per-fibre table users read: the keys and manifest ``metadata``, then each stage's.

    ``slide``, the manifest's metadata columns, ``fibre_id``, then ``measure``'s
    columns in their order (``measured``), then ``curate``'s.
    """
    keys = list(KEY_COLUMNS)
    return (keys[:1] + list(metadata) + keys[1:] + [k for k in measured if k not in KEY_COLUMNS]
            + [k for k in CURATE_COLUMNS if k not in KEY_COLUMNS])


def manifest_columns(manifest: pd.DataFrame) -> dict[str, Column]:
    """Declarations of slide metadata columns (not ``slide``) from the manifest: text, bool or their numbers."""
    out = {}
    for k in manifest.columns.drop("slide", errors="ignore"):
        dtype = manifest[k].dtype
        if pd.api.types.is_bool_dtype(dtype):
            name = "bool"
        elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_dtype(dtype):
            name = dtype.name if isinstance(dtype, np.dtype) else "float64"
        else:
            name = "str"
        out[str(k)] = Column(name, "", "Slide metadata from the manifest (tables/manifest.csv).")
    return out


def _dtype(col: Column) -> np.dtype:
    return np.dtype(object) if col.dtype == "str" else np.dtype(col.dtype)


def empty_table(columns: dict[str, Column] = MEASURE_COLUMNS) -> pd.DataFrame:
    """An empty table with the declared columns and dtypes."""
    return pd.DataFrame({k: pd.Series([], dtype=_dtype(c)) for k, c in columns.items()})


def table_from_columns(
    data: dict[str, np.ndarray], columns: dict[str, Column] = MEASURE_COLUMNS
) -> pd.DataFrame:
    """Build a table in declared column order, casting each array to its declared dtype."""
    missing = set(columns) - set(data)
    if missing:
        raise KeyError(f"missing declared columns: {sorted(missing)}")
    return pd.DataFrame(
        {k: np.asarray(data[k]).astype(_dtype(c), copy=False) for k, c in columns.items()}
    )


def join_fibre_tables(measured: pd.DataFrame, curated: pd.DataFrame) -> pd.DataFrame:
    """The per-fibre table users read: ``measure``'s and ``curate``'s columns of the same fibres.

    Raises
    ------
    ValueError
        When the two tables do not hold the same fibres (slide and ID) in the same order.
    """
    for key in KEY_COLUMNS:
        if not np.array_equal(measured[key].to_numpy(), curated[key].to_numpy()):
            raise ValueError("the measured and curated tables hold different fibres; run curate again")
    both = pd.concat([measured.reset_index(drop=True), curated.drop(columns=list(KEY_COLUMNS)).reset_index(drop=True)],
                     axis=1)
    return both[fibre_columns(list(measured.columns))]
