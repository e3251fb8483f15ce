"""One self-contained HTML page per run (``RUN/report/index.html``).

:func:`build_report` reads the run's aggregated tables (``tables/slides.parquet``,
``groups.parquet``, ``histograms.nc``, written by ``aggregate``) and the fibre
tables, then draws class thumbnails, histograms and the class breakdown, writes them as
PNG beside the page and embeds them as base64 (no external file, script or
style sheet), renders the slide quality control (slides that failed it, and why) and the slide
table straight from ``tables/slides.parquet``
(every number in the page comes from that table: floats with 6 significant
digits), and ends with the run's provenance: ``run.json`` when present, the
configuration, package versions and the configured model's hash.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import ValidationError
from nclsm_scale.layout import RunLayout, read_fibre_table
from nclsm_scale.model.card import weights_record
from nclsm_scale.report.figures import class_breakdown_png, class_thumbnail, histogram_png, png_bytes
from nclsm_scale.report.geojson import export_geojson
from nclsm_scale.tables import QC_COLUMNS, FibreClass
from nclsm_scale.versions import package_versions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["build_report", "format_value", "provenance"]

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
img.plot{max-width:760px}pre{background:#f7f7f7;padding:8px;font-size:11px;overflow:auto;max-height:420px}
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


def _stats_table(df: pd.DataFrame, key: str, table_id: str) -> str:
    """Transposed table: one row per metric, one column per slide (or group)."""
    heads = df[key].astype(str).tolist()
    out = [f'<table id="{table_id}"><tr><th class="k">{html.escape(key)}</th>']
    out += [f"<th>{html.escape(h)}</th>" for h in heads]
    out.append("</tr>")
    for col in df.columns:
        if col == key:
            continue
        out.append(f'<tr><td class="k">{html.escape(str(col))}</td>')
        for h, v in zip(heads, df[col].tolist(), strict=True):
            out.append(f'<td data-row="{html.escape(h)}" data-col="{html.escape(str(col))}">{format_value(v)}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def provenance(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """Run record (``run.json`` if present), configuration, package versions and the model's hash."""
    run_json = run_dir / "run.json"
    record: dict[str, Any] = {}
    if run_json.is_file():
        try:
            record["run.json"] = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            record["run.json"] = f"unreadable: {exc}"
    record["versions"] = package_versions()
    record["model"] = {**weights_record(cfg.model),
                       "note": "the configured network; slides segmented from stored maps did not use it"}
    record["config"] = cfg.model_dump(mode="json")
    return record


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
         histogram_png(histograms, "csa", "CSA (um²)", dpi)),
        ("hist_feret_min.png", "Min Feret of analysable fibres",
         histogram_png(histograms, "feret_min", "min Feret diameter (um)", dpi)),
        ("hist_mito_rel.png", "Mito intensity of analysable fibres (relative to the slide median)",
         histogram_png(histograms, "mito_rel", "mito interior mean / slide median", dpi)),
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
                f"{html.escape(str(layout.root))}</code>, then open <code>/slide/{html.escape(name)}</code></span>")
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
    meaning = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(c.description)}</li>"
                      for k, c in QC_COLUMNS.items())
    return f"<h2>Quality control</h2><p>{verdict}</p><ul class='meta'>{meaning}</ul>" + _stats_table(qc, "slide", "qc")


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
    prov = provenance(layout.root, cfg)
    s = slides
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>nclsm-scale report: {html.escape(layout.root.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>nclsm-scale report</h1><div class='meta'>run {html.escape(str(layout.root))} · {now} · "
        f"{len(s)} slide(s), {int(s['n_fibres'].sum())} fibres, {int(s['n_analysable'].sum())} analysable</div>",
        "<h2>Slides</h2>", _legend(), f"<div class='thumbs'>{''.join(thumbs)}</div>", _quality(s),
        "<h2>Class breakdown</h2>", _img(plots[0][2], plots[0][1], "plot"),
        "<h2>Distributions</h2>",
        *(f"<h3>{html.escape(t)}</h3>{_img(p, t, 'plot')}" for _, t, p in plots[1:]),
        "<h2>Slide table</h2><p class='meta'>tables/slides.parquet (and .csv); sizes and intensities over "
        f"classes {', '.join(cfg.aggregate.analysable_classes)}; SD with ddof 1, CV = SD / mean; areas in mm².</p>",
        _stats_table(s, "slide", "slides"),
    ]
    if groups is not None:
        g = groups.copy()
        keys = [c for c in cfg.aggregate.group_by if c in g.columns]
        g.insert(0, "group", g[keys].astype(str).agg(" / ".join, axis=1))
        parts += ["<h2>Groups</h2>", _stats_table(g.drop(columns=keys), "group", "groups")]
    parts += ["<h2>Provenance</h2><pre>", html.escape(json.dumps(prov, indent=1, default=str)), "</pre>",
              "</body></html>"]
    index = out / "index.html"
    index.write_text("".join(parts), encoding="utf-8")
    logger.info("report of %d slide(s) -> %s", len(s), index)
    return index
