"""User overrides of curation classes: read from a CSV, applied to a table, remembered beside it.

A user's CSV (``fibre_id,class[,reasons]``) is read with :func:`read_overrides`
and applied with :func:`apply_overrides`. ``curate`` keeps every override it was
given in a file beside its table (``RunLayout.overrides``,
``tables/curate/<slide>.overrides.csv``), with each fibre's ``area_seg_px`` at the time, so a later
``curate`` without a CSV (new thresholds, re-aggregation) applies them again
(:func:`load_stored_overrides`). A newer CSV replaces the stored entries of the
fibres it names and keeps the others (:func:`merge_overrides`). Stored entries
whose fibre is gone or has another area (the slide was segmented again, so IDs
name other fibres) are dropped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from nclsm_scale.errors import SlideWriteError, ValidationError
from nclsm_scale.tables import FibreClass

__all__ = [
    "apply_overrides",
    "check_fibres",
    "default_reasons",
    "load_stored_overrides",
    "merge_overrides",
    "read_overrides",
    "save_stored_overrides",
]

logger = logging.getLogger(__name__)

#: Columns of a normalised overrides table.
OVERRIDE_COLUMNS = ["fibre_id", "class", "reasons"]


def default_reasons(classes: pd.Series) -> pd.Series:
    """The reasons an override of class ``classes`` gets when none are given: the class itself, none for AM.

    >>> default_reasons(pd.Series(["NTM", "AM"])).tolist()
    ['NTM', '']
    """
    return classes.where(classes != FibreClass.AM.value, "")


def read_overrides(csv_path: str | Path) -> pd.DataFrame:
    """Read and check a user's overrides CSV; return ``fibre_id`` (int64), ``class``, ``reasons``.

    The CSV needs columns ``fibre_id`` and ``class``; ``reasons`` is optional
    (default: the class itself, or empty for AM). Unknown classes or reason codes,
    non-integer or duplicate IDs and missing columns raise
    :class:`~nclsm_scale.errors.ValidationError`.
    """
    path = Path(csv_path)
    try:
        ov = pd.read_csv(path, dtype={"class": str, "reasons": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValidationError(f"{path}: cannot read the overrides CSV: {exc}") from None
    missing = {"fibre_id", "class"} - set(ov.columns)
    if missing:
        raise ValidationError(
            f"{path}: missing column(s) {sorted(missing)}; expected fibre_id,class[,reasons]"
        )
    allowed = {r.value for r in FibreClass}
    ov["class"] = ov["class"].astype(str).str.strip().str.upper()
    bad = sorted(set(ov["class"]) - allowed)
    if bad:
        raise ValidationError(
            f"{path}: unknown class(es) {bad}; allowed: {', '.join(sorted(allowed))}"
        )
    ids = pd.to_numeric(ov["fibre_id"], errors="coerce")
    if ids.isna().any():
        raise ValidationError(
            f"{path}: fibre_id must be integers, got {ov['fibre_id'][ids.isna()].tolist()[:5]}"
        )
    ids = ids.astype("int64")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise ValidationError(f"{path}: fibre_id(s) {dup[:10]} given more than once")
    if "reasons" in ov.columns:
        reasons = ov["reasons"].fillna("").astype(str).str.strip()
        for cell in reasons:
            codes = {c for c in cell.split(";") if c}
            if codes - allowed:
                raise ValidationError(
                    f"{path}: unknown reason code(s) {sorted(codes - allowed)} in {cell!r}"
                )
    else:
        reasons = default_reasons(ov["class"])
    return pd.DataFrame({"fibre_id": ids, "class": ov["class"], "reasons": reasons}).reset_index(drop=True)


def check_fibres(overrides: pd.DataFrame, table: pd.DataFrame, source: str | Path) -> None:
    """Raise :class:`~nclsm_scale.errors.ValidationError` when ``overrides`` names fibres ``table`` lacks."""
    unknown = sorted(set(overrides["fibre_id"]) - set(table["fibre_id"].astype("int64")))
    if unknown:
        raise ValidationError(
            f"{source}: {len(unknown)} fibre_id(s) not in the table, e.g. {unknown[:10]}"
        )


def apply_overrides(table: pd.DataFrame, overrides: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Return a copy of ``table`` with classes and reasons replaced from ``overrides``.

    ``overrides`` is a CSV path (see :func:`read_overrides`) or such a table.
    Overridden rows get confidence 1 and ``overridden`` True; fibre IDs not in the
    table raise :class:`~nclsm_scale.errors.ValidationError`.
    """
    if isinstance(overrides, (str, Path)):
        ov, source = read_overrides(overrides), overrides
    else:
        ov, source = overrides, "overrides"
    check_fibres(ov, table, source)
    known = pd.Index(table["fibre_id"].astype("int64"))
    out = table.copy()
    rows = known.get_indexer(pd.Index(ov["fibre_id"]))
    out["overridden"] = False
    for column, value in (("curation_class", ov["class"].to_numpy()), ("reasons", ov["reasons"].to_numpy()),
                          ("confidence", 1.0), ("overridden", True)):
        values = out[column].to_numpy(copy=True)
        values[rows] = value
        out[column] = values
    return out


def merge_overrides(stored: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Update ``stored`` overrides by ``new`` ones (the newer entry wins per fibre), sorted by fibre ID."""
    keep = stored[~stored["fibre_id"].isin(new["fibre_id"])]
    both = pd.concat([keep[OVERRIDE_COLUMNS], new[OVERRIDE_COLUMNS]], ignore_index=True)
    return both.sort_values("fibre_id", kind="stable").reset_index(drop=True)


def load_stored_overrides(path: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """Load the remembered overrides that still apply to ``table`` (none if ``path`` does not exist).

    Entries whose fibre is missing from ``table`` or whose recorded ``area_seg_px``
    differs (the slide was segmented again) are dropped with a warning. Stores
    written before the tables' schema version 1 name that column ``area_px``.
    """
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame({"fibre_id": pd.Series([], dtype="int64"), "class": [], "reasons": []})
    ov = read_overrides(path)
    try:
        area = pd.read_csv(path, usecols=lambda c: c in ("area_seg_px", "area_px")).iloc[:, 0].to_numpy()
    except (ValueError, OSError, IndexError) as exc:
        raise ValidationError(f"{path}: stored overrides need an area_seg_px column: {exc}") from None
    current = table.set_index(table["fibre_id"].astype("int64"))["area_seg_px"]
    now = current.reindex(ov["fibre_id"]).to_numpy()
    valid = now == area
    if not valid.all():
        logger.warning(
            "%s: %d stored override(s) dropped: their fibres are gone or changed (segmented again?), e.g. %s",
            path, int((~valid).sum()), ov["fibre_id"][~valid].tolist()[:5],
        )
    return ov[valid].reset_index(drop=True)


def save_stored_overrides(path: str | Path, overrides: pd.DataFrame, table: pd.DataFrame) -> Path | None:
    """Write ``overrides`` with each fibre's current ``area_seg_px`` to ``path``; remove it when there are none."""
    path = Path(path)
    if overrides.empty:
        path.unlink(missing_ok=True)
        return None
    area = table.set_index(table["fibre_id"].astype("int64"))["area_seg_px"].reindex(overrides["fibre_id"])
    out = overrides[OVERRIDE_COLUMNS].assign(area_seg_px=area.to_numpy())
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        out.to_csv(tmp, index=False)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SlideWriteError(f"cannot write the stored overrides {path}: {exc}") from None
    return path
