"""Classes for napari: each fibre's class, reasons and key measurements as NGFF label properties.

napari-ome-zarr shows ``labels/fibres`` as a labels layer; the ``image-label``
``colors`` of the label group colour it, and its ``properties`` become the layer's
features, shown for the fibre under the cursor. :func:`label_metadata` builds both
from a curated table: every fibre in its class colour (:class:`~nclsm_scale.tables.FibreClass`,
opaque) with its class, reasons, reasons not judged, confidence, fibre type and
the measurements of :data:`PROPERTIES`; label 0 is the transparent background
(NGFF validators want the same label values in ``colors`` and ``properties``).

The metadata is a view of curate's table, rewritten whenever ``curate`` runs, so
napari shows the classes after overrides too. It lives in the label group's
``zarr.json`` (about 210 bytes a fibre), which every reader of the group parses,
hence ``curate.napari_max_fibres``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from nclsm_scale.tables import FibreClass

__all__ = ["PROPERTIES", "label_metadata"]

#: napari feature name -> (table column, decimals) of the numeric properties.
PROPERTIES: dict[str, tuple[str, int]] = {
    "confidence": ("confidence", 3),
    "CSA µm²": ("area_um2", 1),
    "min Feret µm": ("feret_min_um", 2),
    "fold fraction": ("fold_fraction", 3),
}
#: napari feature name -> table column of the text properties.
_TEXT = {"class": "curation_class", "reasons": "reasons", "not judged": "not_judged", "fibre type": "fibre_type"}


def _number(value: Any, decimals: int) -> float | None:
    """``value`` rounded; None (JSON null) for a missing or non-finite one."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return round(x, decimals) if math.isfinite(x) else None


def label_metadata(table: pd.DataFrame) -> tuple[dict[int, tuple[int, int, int, int]], list[dict[str, Any]]]:
    """``image-label`` colours and properties of the fibres of a curated table.

    Parameters
    ----------
    table : one row per fibre with ``fibre_id``, ``curation_class`` and, where
        present, the columns of ``_TEXT`` and :data:`PROPERTIES`.

    Returns
    -------
    colors : ``{label value: (r, g, b, a)}``, 0 transparent.
    properties : one dict per label value (0 first), ``label-value`` and the features.

    >>> t = pd.DataFrame({"fibre_id": [3], "curation_class": ["NTM"], "reasons": ["NTM"], "area_um2": [1234.56]})
    >>> colors, props = label_metadata(t)
    >>> colors[3], props[1]["class"], props[1]["CSA µm²"]
    ((240, 228, 66, 255), 'NTM', 1234.6)
    """
    rgba = {c.value: (*c.rgb, 255) for c in FibreClass}
    ids = [int(v) for v in table["fibre_id"]]
    classes = [str(v) for v in table["curation_class"]]
    columns: dict[str, list[Any]] = {
        name: ["" if pd.isna(v) else str(v) for v in table[col]] for name, col in _TEXT.items() if col in table
    }
    columns.update({name: [_number(v, d) for v in table[col]] for name, (col, d) in PROPERTIES.items() if col in table})
    colors = {0: (0, 0, 0, 0), **{f: rgba[c] for f, c in zip(ids, classes, strict=True)}}
    properties: list[dict[str, Any]] = [{"label-value": 0, "class": "background"}]
    properties += [{"label-value": f, **{k: v[i] for k, v in columns.items()}} for i, f in enumerate(ids)]
    return colors, properties
