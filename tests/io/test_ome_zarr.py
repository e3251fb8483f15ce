"""Writer: NGFF 0.5 metadata validated by ome-zarr-models, read by ome-zarr-py; labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image import Image

from nclsm_scale.errors import SlideWriteError
from nclsm_scale.io.ome_zarr import annotate_labels, create_image, create_labels, level_transforms, resolve_shard_px


def _image(path, shard_px=None, pixel_size_um=0.5):
    return create_image(path, (2, 2500, 1300), np.uint16, pixel_size_um=pixel_size_um,
                        channel_names=["membrane", "mito"], chunk_px=256, shard_px=shard_px,
                        min_level_px=200, roles={"membrane": 0, "mito": 1}, extra_attrs={"slide_id": "s"})


def test_create_image_levels_metadata_and_validation(tmp_path):
    path = tmp_path / "a.ome.zarr"
    arrays = _image(path, shard_px=1024)
    assert [a.shape for a in arrays] == [(2, 2500, 1300), (2, 1250, 650), (2, 625, 325), (2, 313, 163), (2, 157, 82)]
    assert arrays[0].shards == (2, 1024, 1024) and arrays[1].shards == (2, 512, 512) and arrays[2].shards is None
    meta = json.loads((path / "0" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert meta["dimension_names"] == ["c", "y", "x"]
    Image.from_zarr(zarr.open_group(str(path), mode="r"))
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    ms = attrs["ome"]["multiscales"][0]
    assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    assert ms["datasets"][2]["coordinateTransformations"] == level_transforms(2, (0.5, 0.5))
    assert [c["color"] for c in attrs["ome"]["omero"]["channels"]] == ["FF0000", "00FF00"]
    assert attrs["nclsm"]["roles"] == {"membrane": 0, "mito": 1} and attrs["nclsm"]["complete"] is False
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes[0].data[0].shape == (2, 2500, 1300) and len(nodes[0].data) == 5


def test_unknown_pixel_size_has_no_units(tmp_path):
    _image(tmp_path / "u.ome.zarr", pixel_size_um=None)
    group = zarr.open_group(str(tmp_path / "u.ome.zarr"), mode="r")
    ms = group.attrs["ome"]["multiscales"][0]
    assert all("unit" not in a for a in ms["axes"])
    assert group.attrs["nclsm"]["pixel_size_known"] is False
    Image.from_zarr(group)


def test_shard_choice():
    assert resolve_shard_px((10000, 500), 1024, None) == 4096
    assert resolve_shard_px((5000, 500), 1024, None) == 0
    with pytest.raises(SlideWriteError, match="multiple"):
        resolve_shard_px((5000, 500), 1024, 1000)


def test_create_labels_every_level_and_valid(tmp_path):
    path = tmp_path / "l.ome.zarr"
    images = _image(path, shard_px=1024)
    labels = create_labels(path, "fibres", colors={0: (0, 0, 0, 0), 1: (255, 0, 0, 255)},
                           properties=[{"label-value": 0, "class": "background"},
                                       {"label-value": 1, "class": "AM"}])
    assert [lab.shape[-2:] for lab in labels] == [img.shape[-2:] for img in images]
    assert labels[0].shards == (1, 1024, 1024) and labels[0].dtype == np.uint32
    create_labels(path, "regions", dtype=np.uint8)
    group = zarr.open_group(str(path), mode="r")
    assert group["labels"].attrs["ome"] == {"version": "0.5", "labels": ["fibres", "regions"]}
    model = Image.from_zarr(group)
    assert model.labels is not None and sorted(model.labels.label_paths) == ["fibres", "regions"]
    with pytest.raises(SlideWriteError, match="same values"):
        create_labels(path, "odd", colors={0: (0, 0, 0, 0)}, properties=[{"label-value": 2}])
    with pytest.raises(SlideWriteError, match="integer"):
        create_labels(path, "bad", dtype=np.float32)


def test_annotate_labels_replaces_only_colours_and_properties(tmp_path):
    path = tmp_path / "l.ome.zarr"
    _image(path)
    create_labels(path, "fibres")
    group = zarr.open_group(str(path), path="labels/fibres", mode="r+")
    group.attrs["nclsm"] = {"segment": {"complete": True}}
    before = group.attrs.asdict()
    annotate_labels(path, "fibres", {0: (0, 0, 0, 0), 7: (1, 2, 3, 255)},
                    [{"label-value": 0, "class": "background"}, {"label-value": 7, "class": "NTM", "CSA µm²": 1.5}])
    after = zarr.open_group(str(path), path="labels/fibres", mode="r").attrs.asdict()
    label = after["ome"].pop("image-label")
    assert label["properties"][1] == {"label-value": 7, "class": "NTM", "CSA µm²": 1.5}
    assert label["colors"][1] == {"label-value": 7, "rgba": [1, 2, 3, 255]}
    before["ome"].pop("image-label")
    assert after == before
    Image.from_zarr(zarr.open_group(str(path), mode="r"))  # still valid
    annotate_labels(path, "fibres", None, None)
    label = zarr.open_group(str(path), path="labels/fibres", mode="r").attrs["ome"]["image-label"]
    assert "properties" not in label and label["colors"] == [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    with pytest.raises(SlideWriteError, match="same values"):
        annotate_labels(path, "fibres", {0: (0, 0, 0, 0)}, [{"label-value": 3}])
    with pytest.raises(SlideWriteError, match="no label image"):
        annotate_labels(path, "missing", None, None)
