"""The tables' vocabulary: every fibre-table column, curation class, reason and label value, declared once.

Columns are declared name -> dtype, unit and meaning. ``measure`` writes
:data:`MEASURE_COLUMNS` (one row per fibre, physical units unless the name ends
in ``_px``) and, for every image channel, the statistics of
:data:`CHANNEL_STATS` (:func:`measure_columns`); ``curate`` writes
:data:`CURATE_COLUMNS` (keyed by ``fibre_id``); the per-fibre table users read
joins both (:func:`join_fibre_tables`, column order :func:`fibre_columns`).
Coordinates are slide pixel indices (pixel centres at integer positions, the NGFF
convention), so ``centroid_y_um = centroid_y_px * pixel_size_um``.

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
    "MEASURE_COLUMNS",
    "PRIORITY",
    "QC_COLUMNS",
    "REGION_COLORS",
    "TISSUE",
    "channel_columns",
    "channel_keys",
    "empty_table",
    "fibre_columns",
    "join_fibre_tables",
    "measure_columns",
    "table_from_columns",
]


class FibreClass(StrEnum):
    """Curation classes: AM (analysable) or a rejection reason code (NCL-SM scheme plus EDGE and DEBRIS).

    Each member carries ``priority`` (rejections: the first that applies is a
    fibre's primary class; None for AM), ``rgb`` (display colour, also in the
    GeoJSON export) and ``meaning``. Members are listed in the order tables and
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

    AM = ("AM", None, (46, 204, 64), "analysable")
    QC = ("QC", None, (57, 204, 204), "on a slide that failed quality control (the slide table's qc_flag)")
    NF = ("NF", 0, (90, 90, 90), "not a fibre: interstitium, vessel or background (no fibre cytoplasm)")
    DEBRIS = ("DEBRIS", 1, (170, 170, 170), "too small to be a fibre")
    EDGE = ("EDGE", 2, (0, 116, 217), "cut by the image or tissue border")
    FR = ("FR", 3, (255, 65, 54), "in a folded region of the section")
    FAM = ("FAM", 4, (177, 13, 201), "freeze artefact")
    NTM = ("NTM", 5, (255, 180, 0), "non-transverse (oblique or longitudinal profile)")


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

MEASURE_COLUMNS: dict[str, Column] = {
    "fibre_id": _C("uint32", "", "Fibre label ID in labels/fibres."),
    "area_px": _C("int64", "px", "Pixel count."),
    "area_um2": _C("float64", "um2", "Cross-sectional area (CSA): pixel count x pixel area."),
    "perimeter_um": _C(
        "float64",
        "um",
        "Outline length, skimage.measure.perimeter estimator (4-neighbourhood border pixels, "
        "weights 1, sqrt2, (1+sqrt2)/2 by local configuration; runs through border pixel centres).",
    ),
    "perimeter_border_px": _C(
        "int64", "px", "Number of 4-connected border pixels (mahotas bwperim n=4 count, as NCL-SM)."
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
    "centroid_y_px": _C("float64", "px", "Centroid row, slide pixel coordinates."),
    "centroid_x_px": _C("float64", "px", "Centroid column, slide pixel coordinates."),
    "centroid_y_um": _C("float64", "um", "Centroid row, slide coordinates."),
    "centroid_x_um": _C("float64", "um", "Centroid column, slide coordinates."),
    "bbox_y0_px": _C("int64", "px", "Bounding box first row (slide coordinates)."),
    "bbox_x0_px": _C("int64", "px", "Bounding box first column (slide coordinates)."),
    "bbox_y1_px": _C("int64", "px", "Bounding box end row, exclusive."),
    "bbox_x1_px": _C("int64", "px", "Bounding box end column, exclusive."),
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
}

CURATE_COLUMNS: dict[str, Column] = {
    "fibre_id": _C("uint32", "", "Fibre label ID in labels/fibres."),
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
        f"Score of the {c.value} rule: its feature's log ratio to the threshold (>= 0: {c.meaning}); NaN: not judged.",
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


def fibre_columns(measured: Sequence[str]) -> list[str]:
    """Column order of the per-fibre table users read, from ``measure``'s columns.

    The measured columns with ``fold_fraction`` beside the other region flags, then curation's.
    """
    measured = list(measured)
    at = measured.index("touches_tissue_border") + 1
    curated = [k for k in CURATE_COLUMNS if k != "fibre_id"]
    return measured[:at] + ["fold_fraction"] + measured[at:] + [k for k in curated if k != "fold_fraction"]


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
        When the two tables do not hold the same fibres in the same order.
    """
    ids = measured["fibre_id"].to_numpy()
    if not np.array_equal(ids, curated["fibre_id"].to_numpy()):
        raise ValueError("the measured and curated tables hold different fibres; run curate again")
    both = pd.concat([measured.reset_index(drop=True), curated.drop(columns="fibre_id").reset_index(drop=True)],
                     axis=1)
    return both[fibre_columns(measured.columns)]
