"""One self-contained HTML page per run (``RUN/report/index.html``).

:func:`build_report` reads the run's aggregated tables (``tables/slides.parquet``,
``groups.parquet``, ``histograms.nc``, written by ``aggregate``) and the fibre
tables, then draws class thumbnails, histograms and the class breakdown, writes them as
PNG beside the page and embeds them as base64 (no external file, script or
style sheet), renders the slide quality control (slides that failed it, and why) and the slide
table straight from ``tables/slides.parquet``, one row per slide with headers in
words and units (µm, µm², from :mod:`nclsm_scale.tables`' declarations; every
number in the page comes from that table: floats with 6 significant digits),
the classes with their meanings, the group comparison, and ends with the run's
provenance: the settings changed from the defaults, package versions and the
configured model's hash, with no local path.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import ValidationError
from nclsm_scale.layout import RunLayout, read_fibre_table
from nclsm_scale.model.card import weights_record
from nclsm_scale.report.figures import (
    class_breakdown_png,
    class_thumbnail,
    group_histograms,
    histogram_png,
    png_bytes,
)
from nclsm_scale.report.geojson import export_geojson
from nclsm_scale.tables import GROUP_COLUMNS, QC_COLUMNS, SLIDE_COLUMNS, TYPE_KEYS, Column, FibreClass
from nclsm_scale.versions import package_versions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["build_report", "class_table", "column_label", "format_value", "local_name", "provenance",
           "row_table", "with_units"]

logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1340px}
h1{margin:0 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td.k,th.k{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border:1px solid #999}
.thumbs{display:flex;flex-wrap:wrap;gap:16px}.thumbs figure{margin:0}
.thumbs img{max-width:640px;border:1px solid #ccc}figcaption{font-size:13px;color:#444}
img.plot{max-width:760px}.scroll{overflow-x:auto}th .u{font-weight:normal;color:#666}
th[title]{cursor:help}#classes .k{font-family:inherit}
"""


def format_value(value: Any) -> str:
    """Text of a table cell: integers as is, floats with 6 significant digits, NaN as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        return f"{float(value):.6g}"
    return html.escape(str(value))


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


#: Units as the tables declare them -> as the report writes them.
UNITS = {"um": "µm", "um2": "µm²", "mm2": "mm²", "1/mm2": "1/mm²"}
_UNIT_WORDS = re.compile(r"\b(1/mm2|um2|mm2|um)\b")


def with_units(text: str) -> str:
    """``text`` with the tables' ASCII units written as symbols (``um2`` -> ``µm²``; ``_um`` names kept).

    >>> with_units("0.5-2 um at 1 um/px, 250 um2, ring_width_um")
    '0.5-2 µm at 1 µm/px, 250 µm², ring_width_um'
    """
    return _UNIT_WORDS.sub(lambda m: UNITS[m.group(1)], text)


#: Words of column names -> as headers write them (unit words are dropped: the unit follows the header).
_WORDS = {"csa": "CSA", "sd": "SD", "cv": "CV", "qc": "QC", "p10": "10th percentile", "p90": "90th percentile",
          "feret": "Feret", "n": "", "pct": "", "um": "", "um2": "", "mm2": ""}
_TYPES = {k: t for t, k in TYPE_KEYS.items()}
#: Channel-intensity columns: raw counts of one slide, not comparable across slides.
_RAW = re.compile(r"^mito_(mean|median|sd|p10|p90)$")


def column_label(name: str) -> str:
    """Header text of a slide or group table column (its unit apart).

    >>> [column_label(c) for c in ("n_AM", "reason_FR", "csa_um2_median", "type_I_IIa_pct", "fibre_density_per_mm2")]
    ['AM fibres', 'reason FR', 'CSA median', 'type I/IIa', 'fibre density']
    """
    if name.startswith("n_"):
        return name[2:] if name[2:] in ("fibres", "slides") else f"{name[2:]} fibres"
    if name.startswith("reason_"):
        return f"reason {name[7:]}"
    for key, fibre_type in sorted(_TYPES.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(f"type_{key}_"):
            tail = name[len(key) + 6:]
            rest = "" if tail == "pct" else column_label(tail)  # the unit (%) says it is a share
            return f"type {fibre_type} {rest}".strip()
    words = [_WORDS.get(w, w) for w in name.replace("feret_min", "min_feret").split("_")]
    words = [w for w in words if w]
    if words and words[-1] == "per":
        words.pop()
    return " ".join(words) or name


def _header(name: str, col: Column | None) -> str:
    unit = UNITS.get(col.unit, col.unit) if col else ""
    if _RAW.match(name):
        unit = "raw counts, this slide only"
    tip = with_units(col.description) if col else ""
    unit_html = f"<br><span class='u'>({html.escape(unit)})</span>" if unit else ""
    return f'<th title="{html.escape(tip)}">{html.escape(column_label(name))}{unit_html}</th>'


def _ordered(df: pd.DataFrame, first: list[str]) -> list[str]:
    return [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]


#: Columns the slide and group tables show first, after the row key and the manifest's metadata.
KEY_STATS = ["n_slides", "n_fibres", "n_analysable", "pct_analysable", "csa_um2_median", "csa_um2_mean", "csa_um2_sd",
             "feret_min_um_median", "feret_min_um_mean", "feret_min_um_sd",
             *(f"type_{k}_pct" for k in TYPE_KEYS.values()), "fibre_density_per_mm2", "tissue_area_mm2", "qc_flag"]


def row_table(df: pd.DataFrame, key: str, table_id: str, first: list[str]) -> str:
    """One row per ``key`` (slide or group), ``first`` columns next, human headers with units and tooltips."""
    declared = {**SLIDE_COLUMNS, **GROUP_COLUMNS}
    cols = _ordered(df, [key, *first])
    out = [f'<div class="scroll"><table id="{table_id}"><tr>']
    out += [_header(c, declared.get(c)) for c in cols]
    out.append("</tr>")
    for row in df[cols].itertuples(index=False):
        name = html.escape(str(row[0]))
        out.append(f'<tr><td class="k">{name}</td>')
        out += [f'<td data-row="{name}" data-col="{html.escape(str(c))}">{format_value(v)}</td>'
                for c, v in zip(cols[1:], row[1:], strict=True)]
        out.append("</tr>")
    out.append("</table></div>")
    return "".join(out)


def class_table(slides: pd.DataFrame) -> str:
    """Every class code with its colour, meaning and run-wide counts (primary class, reason applies)."""
    out = ['<table id="classes"><tr><th>class</th><th class="k">meaning</th><th>fibres (primary class)</th>'
           "<th>fibres the reason applies to</th></tr>"]
    for c in FibreClass:
        n = int(slides[f"n_{c.value}"].sum()) if f"n_{c.value}" in slides else 0
        reason = f"reason_{c.value}"
        r = str(int(slides[reason].sum())) if reason in slides else "–"
        out.append(f'<tr><td class="k"><i class="sw" style="background:rgb{c.rgb}"></i>{c.value}</td>'
                   f'<td class="k">{html.escape(with_units(c.meaning))}</td><td>{n}</td><td>{r}</td></tr>')
    out.append("</table>")
    note = ("<p class='meta'>A fibre's class is the first rejection reason that applies, in the order above "
            "(AM when none does). A fibre can have several reasons, so the counts of fibres a reason applies to "
            "can exceed the class counts.</p>")
    return "".join(out) + note


#: Config sections that do not change what a run's report shows (made nothing in it).
UNUSED_SECTIONS = ("synth", "train", "view")


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def local_name(value: Any, run_dir: Path) -> Any:
    """``value`` with absolute paths made relative to ``run_dir`` (those inside it) or cut to their name."""
    if isinstance(value, list):
        return [local_name(v, run_dir) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        path = Path(value)
        return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else path.name
    return value


def provenance(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """What a reader needs to reproduce the run, without local paths.

    ``changed``: the config settings that differ from :class:`RunConfig`'s defaults
    (sections in :data:`UNUSED_SECTIONS` left out); ``versions``; ``model``: the
    configured weights file's name and sha256; ``run``: start and end from
    ``run.json`` when present.
    """
    run_dir = run_dir.resolve()
    default = _flat(RunConfig().model_dump(mode="json"))
    changed = {k: local_name(v, run_dir) for k, v in _flat(cfg.model_dump(mode="json")).items()
               if k.split(".")[0] not in UNUSED_SECTIONS and default.get(k, object()) != v}
    weights = weights_record(cfg.model)
    record: dict[str, Any] = {"changed": changed, "versions": package_versions(),
                              "model": {"weights": Path(str(weights["weights"])).name, "sha256": weights["sha256"]}}
    run_json = run_dir / "run.json"
    if run_json.is_file():
        try:
            run = json.loads(run_json.read_text(encoding="utf-8"))
            record["run"] = {k: run.get(k) for k in ("started", "ended")}
        except (OSError, json.JSONDecodeError) as exc:
            record["run"] = {"run.json": f"unreadable: {type(exc).__name__}"}
    return record


def _provenance_html(prov: Mapping[str, Any]) -> str:
    def code(items: Mapping[str, Any]) -> str:
        return ", ".join(f"<code>{html.escape(str(k))} = {html.escape(json.dumps(v, default=str))}</code>"
                         for k, v in items.items()) or "none"

    lines = [f"<li>settings changed from the defaults: {code(prov['changed'])}</li>",
             f"<li>model: <code>{html.escape(str(prov['model']['weights']))}</code>, sha256 "
             f"<code>{html.escape(str(prov['model']['sha256']))}</code> (slides segmented from stored maps did not "
             "use it)</li>",
             "<li>versions: " + ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}"
                                          for k, v in prov["versions"].items()) + "</li>"]
    if "run" in prov:
        lines.append("<li>run: " + ", ".join(f"{k} {html.escape(str(v))}" for k, v in prov["run"].items()) + "</li>")
    return f'<h2>Provenance</h2><ul id="provenance" class="meta">{"".join(lines)}</ul>'


def _legend() -> str:
    items = "".join(
        f'<span><i class="sw" style="background:rgb{c.rgb}"></i>{c.value}</span>' for c in FibreClass
    )
    return f'<div class="legend">{items}<span><i class="sw" style="background:#fff"></i>fold outline</span></div>'


def _save(png: bytes, path: Path) -> bytes:
    path.write_bytes(png)
    return png


def _plots(slides: pd.DataFrame, histograms: xr.Dataset, dpi: int) -> list[tuple[str, str, bytes]]:
    """The run's plots as ``(file name, title, PNG)``: class breakdown first, then the distributions."""
    return [
        ("classes.png", "Fibres per class", class_breakdown_png(slides, dpi)),
        ("hist_csa.png", "CSA of analysable fibres",
         histogram_png(histograms, "csa", "CSA", "µm²", dpi)),
        ("hist_feret_min.png", "Min Feret diameter of analysable fibres",
         histogram_png(histograms, "feret_min", "min Feret diameter", "µm", dpi)),
        ("hist_mito_rel.png", "Mito intensity of analysable fibres, relative to the slide's median",
         histogram_png(histograms, "mito_rel", "mito interior mean / slide median", "", dpi)),
    ]


def _slide_figure(layout: RunLayout, name: str, slides: pd.DataFrame, cfg: RunConfig, client: Client | None) -> str:
    """The class thumbnail of slide ``name`` as an HTML figure (PNG and GeoJSON written beside the page)."""
    rep = cfg.report
    table, meta = read_fibre_table(layout.fibre_table(name))
    slide_path = meta.get("slide_path") or str(layout.slide(name))
    if not Path(slide_path).exists():
        slide_path = str(layout.slide(name))
    png = _save(png_bytes(class_thumbnail(slide_path, table, meta, rep.thumbnail_px)),
                layout.report / f"{name}_classes.png")
    row = slides.set_index("slide").loc[name].to_dict()
    pct = float(row["pct_analysable"])
    caption = (f"{html.escape(name)}: {int(row['n_fibres'])} fibres, "
               + ("none analysable" if math.isnan(pct) else f"{pct:.1f} % analysable"))
    flag = row.get("qc_flag", "")
    if isinstance(flag, str) and flag:
        caption += f"; <b>failed slide QC: {html.escape(flag)}</b>"
    caption += (f"<br><span class='meta'>full resolution, fibre by fibre: <code>nclsm-scale view "
                f"{html.escape(layout.root.name)}</code>, then open <code>/slide/{html.escape(name)}</code></span>")
    if rep.geojson:
        export_geojson(slide_path, table, meta, layout.report / f"{name}.geojson", client=client,
                       tolerance_px=rep.geojson_tolerance_px)
    return f"<figure>{_img(png, name)}<figcaption>{caption}</figcaption></figure>"


def _quality(slides: pd.DataFrame) -> str:
    """The slide QC section: which slides failed and why, then every slide's QC measures."""
    qc = slides[["slide", *[c for c in QC_COLUMNS if c in slides.columns]]]
    flagged = qc[qc["qc_flag"].fillna("").astype(str) != ""] if "qc_flag" in qc else qc.iloc[:0]
    if len(flagged):
        names = ", ".join(f"{html.escape(str(r.slide))} ({html.escape(str(r.qc_flag))})"
                          for r in flagged.itertuples())
        verdict = f"Failed slide QC, so none of their fibres is analysable (class QC): {names}."
    else:
        verdict = "Every slide passed QC."
    meaning = "".join(f"<li><b>{html.escape(column_label(k))}</b>: {html.escape(with_units(c.description))}</li>"
                      for k, c in QC_COLUMNS.items())
    return (f"<h2>Quality control</h2><p>{verdict}</p><ul class='meta'>{meaning}</ul>"
            + row_table(qc, "slide", "qc", []))


def _groups(groups: pd.DataFrame, slides: pd.DataFrame, histograms: xr.Dataset, group_by: list[str],
            out: Path, dpi: int) -> str:
    """The group comparison: one row per manifest group (slides, analysable share, sizes, types).

    With several groups, each group's distributions follow (its slides' histograms
    summed; the PNGs written to ``out``).
    """
    g = groups.copy()
    keys = [c for c in group_by if c in g.columns]
    g.insert(0, "group", g[keys].astype(str).agg(" / ".join, axis=1))
    note = (f"<p class='meta'>Fibres pooled over each group's slides; groups by {html.escape(' / '.join(keys))} "
            "(the manifest's columns in <code>aggregate.group_by</code>). Sizes over the analysable fibres.</p>")
    parts = ["<h2>Groups</h2>", note, row_table(g.drop(columns=keys), "group", "groups", KEY_STATS)]
    if len(g) > 1 and all(k in slides.columns for k in keys):
        pooled = group_histograms(histograms, slides, keys)
        for name, title, quantity, unit in _GROUP_PLOTS:
            png = _save(histogram_png(pooled, name, quantity, unit, dpi, series="group"), out / f"groups_{name}.png")
            parts.append(f"<h3>{html.escape(title)} by group</h3>{_img(png, title, 'plot')}")
    return "".join(parts)


#: Distributions compared between groups: (histogram, title, quantity, unit).
_GROUP_PLOTS = (("csa", "CSA", "CSA", "µm²"), ("feret_min", "Min Feret diameter", "min Feret diameter", "µm"),
                ("mito_rel", "Mito intensity relative to each slide's median", "mito interior mean / slide median",
                 ""))


def build_report(run_dir: str | Path, cfg: RunConfig, client: Client | None = None) -> Path:
    """Write ``report/index.html`` of an aggregated run with figures, tables, GeoJSON and provenance.

    Parameters
    ----------
    run_dir : the run directory (:class:`~nclsm_scale.layout.RunLayout`), aggregated
        (:func:`nclsm_scale.aggregate.aggregate_run`).
    cfg : RunConfig
        ``cfg.aggregate`` (the classes counted as analysable) and ``cfg.report``
        (thumbnails, figures, GeoJSON).
    client : distributed.Client, optional
        Traces GeoJSON polygons on the cluster; ``None`` in this process.

    Raises
    ------
    ValidationError
        When the run has not been aggregated.
    """
    layout = RunLayout(Path(run_dir))
    if not layout.slides_table.is_file() or not layout.histograms.is_file():
        raise ValidationError(f"{layout.tables}: no slide statistics; aggregate the run first.")
    slides = pd.read_parquet(layout.slides_table)
    groups = pd.read_parquet(layout.groups_table) if layout.groups_table.is_file() else None
    with xr.open_dataset(layout.histograms, engine="scipy") as ds:
        histograms = ds.load()
    out = layout.report
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(slides, histograms, cfg.report.figure_dpi)
    thumbs = [_slide_figure(layout, name, slides, cfg, client) for name in slides["slide"].astype(str)]
    for name, _, png in plots:
        _save(png, out / name)
    s = slides
    meta_cols = [c for c in s.columns if c not in SLIDE_COLUMNS]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>nclsm-scale report: {html.escape(layout.root.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>nclsm-scale report</h1><div class='meta'>run {html.escape(layout.root.name)} · {now} · "
        f"{len(s)} slide(s), {int(s['n_fibres'].sum())} fibres, {int(s['n_analysable'].sum())} analysable</div>",
        "<h2>Classes</h2>", class_table(s),
        "<h2>Slides</h2><p class='meta'>Fibre outlines in their class colour; fold outlines white; scale bar in "
        "µm.</p>", _legend(), f"<div class='thumbs'>{''.join(thumbs)}</div>", _quality(s),
        "<h2>Class breakdown</h2>", _img(plots[0][2], plots[0][1], "plot"),
        "<h2>Distributions</h2><p class='meta'>Bars as wide as their bins; height = share of the slide's analysable "
        "fibres per unit (bar area = share). The last bin is open and given as a count above the plot.</p>",
        *(f"<h3>{html.escape(t)}</h3>{_img(p, t, 'plot')}" for _, t, p in plots[1:]),
        "<h2>Slide table</h2><p class='meta'>tables/slides.parquet (and .csv), one row per slide; hover a header "
        f"for its definition. Sizes and intensities over classes {', '.join(cfg.aggregate.analysable_classes)}; "
        "SD with ddof 1, CV = SD / mean. Mito intensities are raw counts minus the slide's background: compare "
        "them within a slide, across slides only relative to the slide median (the histogram above).</p>",
        row_table(s, "slide", "slides", [*meta_cols, *KEY_STATS]),
    ]
    if groups is not None:
        parts.append(_groups(groups, s, histograms, cfg.aggregate.group_by, out, cfg.report.figure_dpi))
    parts += [_provenance_html(provenance(layout.root, cfg)), "</body></html>"]
    index = out / "index.html"
    index.write_text("".join(parts), encoding="utf-8")
    logger.info("report of %d slide(s) -> %s", len(s), index)
    return index
