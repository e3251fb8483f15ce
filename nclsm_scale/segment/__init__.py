"""Distributed fibre segmentation with exact stitching across blocks.

:func:`segment_slide` is the stage; the block grid is :mod:`nclsm_scale.grid`, the
pure block functions live in :mod:`~nclsm_scale.segment.seeds`,
:mod:`~nclsm_scale.segment.ids` and :mod:`~nclsm_scale.segment.assign`, and
:func:`~nclsm_scale.segment.plane.segment_plane` runs them in one process.
"""

from nclsm_scale.segment.driver import SegmentResult, segment_slide
from nclsm_scale.segment.maps import ArrayMaps, MapSource, StoredMaps, maps_from_labels, write_maps
from nclsm_scale.segment.plane import PlaneResult, segment_plane
from nclsm_scale.segment.seeds import SegmentParams

__all__ = [
    "ArrayMaps",
    "MapSource",
    "PlaneResult",
    "SegmentParams",
    "SegmentResult",
    "StoredMaps",
    "maps_from_labels",
    "segment_plane",
    "segment_slide",
    "write_maps",
]
