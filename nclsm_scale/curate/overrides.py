"""User overrides of curation classes from a CSV file (``fibre_id,class[,reasons]``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nclsm_scale.curate.rules import Reason
from nclsm_scale.errors import ValidationError

__all__ = ["apply_overrides"]


def apply_overrides(table: pd.DataFrame, csv_path: str | Path) -> pd.DataFrame:
    """Return a copy of ``table`` with classes (and reasons) replaced from ``csv_path``.

    The CSV needs columns ``fibre_id`` and ``class``; ``reasons`` is optional
    (default: the class itself, or empty for AM). Overridden rows get confidence 1
    and ``overridden`` True. Unknown fibre IDs or classes, duplicate IDs and
    missing columns raise :class:`~nclsm_scale.errors.ValidationError`.
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
    allowed = {r.value for r in Reason}
    ov["class"] = ov["class"].str.strip().str.upper()
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
    known = pd.Index(table["fibre_id"].astype("int64"))
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise ValidationError(
            f"{path}: {len(unknown)} fibre_id(s) not in the table, e.g. {unknown[:10]}"
        )
    if "reasons" in ov.columns:
        reasons = ov["reasons"].fillna("").str.strip()
        for cell in reasons:
            codes = {c for c in cell.split(";") if c}
            if codes - allowed:
                raise ValidationError(
                    f"{path}: unknown reason code(s) {sorted(codes - allowed)} in {cell!r}"
                )
    else:
        reasons = ov["class"].where(ov["class"] != Reason.AM.value, "")
    out = table.copy()
    rows = known.get_indexer(ids)
    out["overridden"] = False
    col = {
        c: out.columns.get_loc(c) for c in ("curation_class", "reasons", "confidence", "overridden")
    }
    out.iloc[rows, col["curation_class"]] = ov["class"].to_numpy()
    out.iloc[rows, col["reasons"]] = reasons.to_numpy()
    out.iloc[rows, col["confidence"]] = 1.0
    out.iloc[rows, col["overridden"]] = True
    return out
