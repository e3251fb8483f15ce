"""The run report: one self-contained HTML page, PNG figures and QuPath GeoJSON (``report`` stage).

Public API::

    from nclsm_scale.report import build_report, export_geojson

- :func:`build_report` (run_dir, cfg, client=None) -> path of ``report/index.html``; reads the run's
  aggregated tables (``tables/slides.parquet``), then draws and writes everything.
- :func:`export_geojson` (slide_path, table, meta, out_path, ...) -> path of a FeatureCollection
  of fibre polygons (level-0 pixel coordinates) with their class, for QuPath.
"""

from nclsm_scale.report.geojson import export_geojson
from nclsm_scale.report.html import build_report

__all__ = ["build_report", "export_geojson"]
