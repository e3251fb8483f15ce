"""Class edits made in QuPath, read back as overrides.

The report exports each fibre as a QuPath detection (``report/<slide>.geojson``)
with its ``fibre_id`` in the measurements, the metadata, the plain properties
and the name (``fibre <id>``), and its class as ``classification.name``. After a
user reclassified some detections in QuPath and exported the objects as GeoJSON
again, :func:`qupath_edits` reads and checks the file and
:func:`qupath_overrides` turns every feature whose class differs from the
fibre's current class into an override row (``fibre_id``, ``class``,
``reasons``), the format :func:`~nclsm_scale.curate.overrides.read_overrides`
returns. Annotations without a fibre ID (regions a user drew) are skipped.

Every problem is one :class:`~nclsm_scale.errors.ValidationError` naming the
file: not GeoJSON, features without a fibre ID or class, unknown classes,
duplicate or unknown fibre IDs, or a file of another slide (its ``slide``
property or metadata names another slide, or its outlines lie elsewhere than the
fibres they name).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclsm_scale.curate.overrides import default_reasons
from nclsm_scale.errors import ValidationError
from nclsm_scale.tables import FibreClass

__all__ = ["qupath_edits", "qupath_overrides", "read_qupath"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^fibre (\d+)$")


def _features(doc: Any, path: Path) -> list[Any]:
    """The features of a FeatureCollection, a list of features (QuPath's other export) or one Feature."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        return doc["features"]
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    raise ValidationError(f"{path}: not a GeoJSON FeatureCollection or list of features")


def _fibre_id(props: dict[str, Any]) -> Any:
    """The fibre ID from measurements (dict or QuPath's older list), properties, metadata or the name."""
    ms = props.get("measurements")
    if isinstance(ms, dict) and "fibre_id" in ms:
        return ms["fibre_id"]
    if isinstance(ms, list):
        for m in ms:
            if isinstance(m, dict) and m.get("name") == "fibre_id":
                return m.get("value")
    meta = props.get("metadata")
    for source in (props, meta if isinstance(meta, dict) else {}):
        if source.get("fibre_id") not in (None, ""):
            return source["fibre_id"]
    match = _NAME.match(str(props.get("name", "")))
    return match.group(1) if match else None


def _class_name(props: dict[str, Any]) -> str | None:
    """``classification.name`` (or QuPath's ``names`` list of a derived class, joined by ': ')."""
    c = props.get("classification")
    if isinstance(c, str):
        return c
    if not isinstance(c, dict):
        return None
    if isinstance(c.get("name"), str):
        return str(c["name"])
    if isinstance(c.get("names"), list):
        return ": ".join(str(n) for n in c["names"])
    return None


def _points(coords: Any) -> Iterator[tuple[float, float]]:
    if isinstance(coords, list) and len(coords) >= 2 and all(isinstance(v, (int, float)) for v in coords[:2]):
        yield float(coords[0]), float(coords[1])
    elif isinstance(coords, list):
        for c in coords:
            yield from _points(c)


def _bbox(geometry: Any) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a geometry's coordinates; NaN when it has none."""
    pts = np.array(list(_points(geometry.get("coordinates") if isinstance(geometry, dict) else None)))
    if pts.size == 0:
        return (np.nan,) * 4
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def read_qupath(path: str | Path, slide: str) -> pd.DataFrame:
    """Read a QuPath GeoJSON export of slide ``slide``: ``fibre_id``, ``class`` and the outline's box.

    Columns ``x0, y0, x1, y1`` are each feature's bounding box (level-0 px).
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read the QuPath GeoJSON: {exc}") from None
    rows, skipped, no_id, no_class, bad_id = [], 0, [], [], []
    allowed = {c.value for c in FibreClass}
    for i, feat in enumerate(_features(doc, path)):
        found = feat.get("properties") if isinstance(feat, dict) else None
        props: dict[str, Any] = found if isinstance(found, dict) else {}
        meta: dict[str, Any] = props["metadata"] if isinstance(props.get("metadata"), dict) else {}
        other = props.get("slide") or meta.get("slide")
        if other not in (None, "") and str(other) != slide:
            raise ValidationError(f"{path}: features of slide {other!r}, not {slide!r}; import each slide's "
                                  "GeoJSON into that slide")
        fid = _fibre_id(props)
        if fid is None:
            if props.get("objectType", "annotation") == "annotation":
                skipped += 1
                continue
            no_id.append(i)
            continue
        try:
            fid_int = int(float(fid))
            if fid_int != float(fid) or fid_int < 1:
                raise ValueError(fid)
        except (TypeError, ValueError, OverflowError):
            bad_id.append(fid)
            continue
        name = _class_name(props)
        if name is None:
            no_class.append(fid_int)
            continue
        rows.append((fid_int, name.strip().upper(), *_bbox(feat.get("geometry"))))
    if no_id:
        raise ValidationError(f"{path}: {len(no_id)} detection(s) carry no fibre_id (features {no_id[:5]}); "
                              "export the objects from QuPath with their measurements")
    if bad_id:
        raise ValidationError(f"{path}: fibre_id must be positive integers, got {bad_id[:5]}")
    if no_class:
        raise ValidationError(f"{path}: {len(no_class)} fibre(s) have no classification, e.g. {no_class[:5]}; "
                              f"give each one of {', '.join(sorted(allowed))}")
    table = pd.DataFrame(rows, columns=["fibre_id", "class", "x0", "y0", "x1", "y1"])
    table["fibre_id"] = table["fibre_id"].astype("int64")
    bad = sorted(set(table["class"]) - allowed)
    if bad:
        raise ValidationError(f"{path}: unknown class(es) {bad}; allowed: {', '.join(sorted(allowed))}")
    dup = table["fibre_id"][table["fibre_id"].duplicated()].unique().tolist()
    if dup:
        raise ValidationError(f"{path}: fibre_id(s) {dup[:10]} appear more than once")
    if skipped:
        logger.warning("%s: %d annotation(s) without a fibre_id skipped", path, skipped)
    return table


def qupath_edits(path: str | Path, table: pd.DataFrame, slide: str, margin_px: float = 2.0) -> pd.DataFrame:
    """Read a QuPath GeoJSON export and check it against slide ``slide``'s fibre table.

    Parameters
    ----------
    path : GeoJSON exported from QuPath.
    table : the slide's measured fibre table (``fibre_id``, level-0 ``bbox_*_px``).
    slide : the slide's name.
    margin_px : level-0 pixels an outline's box may lie outside its fibre's box
        (outlines edited in QuPath) before the file is taken for another slide's.

    Returns
    -------
    ``fibre_id`` and QuPath ``class`` of every feature (see :func:`read_qupath`).
    """
    path = Path(path)
    edits = read_qupath(path, slide)
    index = pd.Index(table["fibre_id"].astype("int64"))
    rows = index.get_indexer(pd.Index(edits["fibre_id"]))
    if (rows < 0).any():
        unknown = edits["fibre_id"][rows < 0].tolist()
        raise ValidationError(f"{path}: {len(unknown)} fibre_id(s) not in slide {slide!r}, e.g. {unknown[:10]}")
    box = table[["bbox_x0_px", "bbox_y0_px", "bbox_x1_px", "bbox_y1_px"]].to_numpy(np.float64)[rows]
    got = edits[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    off = ((got[:, 2] < box[:, 0] - margin_px) | (got[:, 0] > box[:, 2] + margin_px)
           | (got[:, 3] < box[:, 1] - margin_px) | (got[:, 1] > box[:, 3] + margin_px))
    if off.any():
        raise ValidationError(
            f"{path}: {int(off.sum())} of {len(edits)} outline(s) lie away from the fibres of slide {slide!r} "
            f"they name (e.g. fibre {int(edits['fibre_id'][off].iloc[0])}); is this another slide's GeoJSON?"
        )
    return edits[["fibre_id", "class"]]


def qupath_overrides(edits: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Overrides (``fibre_id``, ``class``, ``reasons``) of the fibres whose QuPath class differs from ``current``.

    ``edits`` comes from :func:`qupath_edits`; ``current`` is the slide's table with
    ``curation_class`` as now (remembered overrides applied).

    >>> now = pd.DataFrame({"fibre_id": [1, 2, 3], "curation_class": ["AM", "FR", "AM"]})
    >>> qupath_overrides(pd.DataFrame({"fibre_id": [1, 2], "class": ["NTM", "AM"]}), now).values.tolist()
    [[1, 'NTM', 'NTM'], [2, 'AM', '']]
    """
    index = pd.Index(current["fibre_id"].astype("int64"))
    was = current["curation_class"].astype(str).to_numpy()[index.get_indexer(pd.Index(edits["fibre_id"]))]
    changed = edits[edits["class"].to_numpy() != was]
    reasons = default_reasons(changed["class"])
    logger.info("%d of %d fibre(s) reclassified in QuPath", len(changed), len(edits))
    return pd.DataFrame({"fibre_id": changed["fibre_id"].to_numpy(np.int64), "class": changed["class"].to_numpy(),
                         "reasons": reasons.to_numpy()})
