"""Readers on real files written by tifffile, PIL and ome-zarr-py: pixels, names, sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from nclsm_scale.errors import SlideReadError
from nclsm_scale.io.ome_zarr import create_image
from nclsm_scale.io.readers import assign_roles, open_source, read_region, source_fingerprint

RNG = np.random.default_rng(0)
DATA = RNG.integers(0, 65535, (2, 700, 900), dtype=np.uint16)


@pytest.fixture(scope="module")
def ome_tiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "s.ome.tif"
    with tifffile.TiffWriter(path) as w:
        meta = {"axes": "CYX", "Channel": {"Name": ["Laminin", "VDAC1"]},
                "PhysicalSizeX": 325.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 325.0, "PhysicalSizeYUnit": "nm"}
        w.write(DATA, tile=(256, 256), subifds=1, compression="zlib", metadata=meta)
        w.write(DATA[:, ::2, ::2], tile=(256, 256), subfiletype=1, compression="zlib")
    return path


def test_ome_tiff_pyramidal_tiled(ome_tiff):
    info = open_source(ome_tiff)
    assert info.shape_cyx == (2, 700, 900) and info.dtype == "uint16"
    assert info.channel_names == ("Laminin", "VDAC1")
    assert info.pixel_size_um == pytest.approx((0.325, 0.325))
    np.testing.assert_array_equal(read_region(info, 100, 250, 613, 900), DATA[:, 100:613, 250:900])
    assert assign_roles(info.channel_names) == {"membrane": 0, "mito": 1}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_strip_bigtiff_resolution_tags(tmp_path, dtype):
    plane = DATA[0].astype(dtype)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, plane, bigtiff=True, rowsperstrip=32, resolution=(40000, 40000), resolutionunit="CENTIMETER")
    info = open_source(path)
    assert info.shape_cyx == (1, 700, 900) and info.dtype == np.dtype(dtype).name
    assert info.pixel_size_um == pytest.approx((0.25, 0.25))
    np.testing.assert_array_equal(read_region(info, 3, 5, 400, 701), plane[None, 3:400, 5:701])


def test_compressed_strips_and_no_resolution(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, DATA, rowsperstrip=16, compression="zlib", metadata=None)
    info = open_source(path, channels=["membrane", "mito"])
    assert info.pixel_size_um is None and not info.memmap
    assert info.channel_names == ("membrane", "mito")
    np.testing.assert_array_equal(read_region(info, 0, 0, 700, 900), DATA)


def test_rgb_png_ncl_sm_convention(tmp_path):
    rgb = RNG.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    info = open_source(tmp_path / "c.png")
    assert info.channel_names == ("membrane", "mito") and info.shape_cyx == (2, 120, 90)
    np.testing.assert_array_equal(read_region(info, 0, 0, 120, 90), np.moveaxis(rgb, -1, 0)[:2])
    keep_all = open_source(tmp_path / "c.png", channels=["membrane", "mito", "dapi"])
    np.testing.assert_array_equal(read_region(keep_all, 10, 10, 20, 30), np.moveaxis(rgb, -1, 0)[:, 10:20, 10:30])


def test_ome_zarr_v04_input(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(tmp_path / "v4.ome.zarr"), mode="w", zarr_format=2)
    write_image(DATA[:, :300, :400], group, axes="cyx", fmt=FormatV04(), scale_factors=[2],
                coordinate_transformations=[[{"type": "scale", "scale": [1, 0.5, 0.5]}],
                                            [{"type": "scale", "scale": [1, 1.0, 1.0]}]])
    info = open_source(tmp_path / "v4.ome.zarr")
    assert info.kind == "zarr" and info.shape_cyx == (2, 300, 400)
    np.testing.assert_array_equal(read_region(info, 10, 20, 300, 400), DATA[:, 10:300, 20:400])


def test_channel_count_mismatch_names_the_file(ome_tiff):
    with pytest.raises(SlideReadError, match=r"s\.ome\.tif: the file has 2 channels but --channels names 3"):
        open_source(ome_tiff, channels=["a", "b", "c"])


def test_truncated_tiff_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, DATA, tile=(128, 128), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideReadError, match="cut.tif"):
        open_source(path)


def test_corrupt_tile_names_file_and_region(tmp_path):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, DATA[0], tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[3]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    info = open_source(path)
    with pytest.raises(SlideReadError, match=r"bad\.tif: cannot decode region"):
        read_region(info, 0, 0, 128, 512)


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SlideReadError, match="unsupported format"):
        open_source(tmp_path / "notes.txt")
    with pytest.raises(SlideReadError, match="no such file"):
        open_source(tmp_path / "gone.tif")


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 3_000_000)
    first = source_fingerprint(path)
    path.write_bytes(b"a" * 2_999_999 + b"b")
    assert source_fingerprint(path)["sha256_head_tail"] != first["sha256_head_tail"]


def _tifffile_cyx(path) -> np.ndarray:
    """Level 0 of the first series decoded by tifffile itself, as (c, y, x)."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data, axes = series.asarray(), series.axes
    chan = [i for i, a in enumerate(axes) if a in "CSIQ"]
    yx = [axes.index("Y"), axes.index("X")]
    rest = [i for i in range(len(axes)) if i not in chan + yx]
    data = data.transpose(rest + chan + yx)
    return data.reshape((-1, *data.shape[-2:]))


@pytest.mark.parametrize("layout", ["planar-rgb", "contig-rgb", "strips", "cyx-pages", "jpeg", "big-endian"])
def test_tile_reader_matches_tifffile(tmp_path, layout):
    rgb = RNG.integers(0, 255, (3, 300, 500), dtype=np.uint8)
    path = tmp_path / f"{layout}.tif"
    if layout == "planar-rgb":
        tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", planarconfig="separate", compression="zlib")
    elif layout in ("contig-rgb", "jpeg"):
        tifffile.imwrite(path, np.moveaxis(rgb, 0, -1), tile=(128, 128), photometric="rgb",
                         compression="zlib" if layout == "contig-rgb" else "jpeg")
    elif layout == "strips":
        tifffile.imwrite(path, DATA[0, :300], rowsperstrip=64, compression="zlib")
    else:
        tifffile.imwrite(path, DATA[:, :300].astype(">u2" if layout == "big-endian" else np.uint16),
                         tile=(128, 128), compression="zlib", metadata={"axes": "CYX"},
                         byteorder=">" if layout == "big-endian" else "<")
    info = open_source(path)
    whole = _tifffile_cyx(path)
    for y0, x0, y1, x1 in [(0, 0, 300, 500), (5, 130, 299, 260), (256, 384, 300, 500)]:
        np.testing.assert_array_equal(read_region(info, y0, x0, y1, x1), whole[:, y0:y1, x0:x1])
        for c0, c1 in [(0, 1), (1, whole.shape[0]), (whole.shape[0] - 1, whole.shape[0])]:
            got = read_region(info, y0, x0, y1, x1, channels=(c0, c1))
            np.testing.assert_array_equal(got, whole[c0:c1, y0:y1, x0:x1])


@pytest.mark.parametrize("kind", ["pages", "planar-per-page", "memmap", "zarr", "png"])
def test_a_channel_range_reads_those_channels(tmp_path, kind):
    data = RNG.integers(0, 65535, (11, 200, 300), dtype=np.uint16)
    path = tmp_path / f"{kind}.tif"
    if kind == "pages":  # one page per channel, as OME-TIFF multiplex images
        tifffile.imwrite(path, data, tile=(64, 64), compression="zlib", metadata={"axes": "CYX"})
    elif kind == "planar-per-page":  # 4 pages of 3 separate sample planes
        data = RNG.integers(0, 65535, (12, 200, 300), dtype=np.uint16)
        tifffile.imwrite(path, data.reshape(4, 3, 200, 300), tile=(64, 64), planarconfig="separate",
                         photometric="minisblack", compression="zlib", metadata={"axes": "CSYX"})
    elif kind == "memmap":
        tifffile.imwrite(path, data, metadata={"axes": "CYX"})
    elif kind == "zarr":
        path = tmp_path / "z.ome.zarr"
        level0 = create_image(path, data.shape, data.dtype, pixel_size_um=1.0, chunk_px=64,
                              channel_names=[f"m{c}" for c in range(11)])[0]
        level0[...] = data
    else:
        data = RNG.integers(0, 255, (3, 200, 300), dtype=np.uint8)
        path = tmp_path / "c.png"
        Image.fromarray(np.moveaxis(data, 0, -1)).save(path)
        data = data[:2]
    info = open_source(path)
    assert info.shape_cyx[0] == data.shape[0]
    n = data.shape[0]
    for c0, c1 in [(0, n), (0, 1), (3, 7), (n - 2, n)]:
        np.testing.assert_array_equal(read_region(info, 13, 70, 190, 299, channels=(c0, c1)),
                                      data[c0:c1, 13:190, 70:299])


def test_absent_tile_reads_as_fill_value(tmp_path):
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, DATA[0, :256, :384], tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        counts = list(tif.pages.first.databytecounts)
        offsets = list(tif.pages.first.dataoffsets)
        counts[4] = offsets[4] = 0  # tile (1, 1) not stored
        tif.pages.first.tags["TileByteCounts"].overwrite(counts)
        tif.pages.first.tags["TileOffsets"].overwrite(offsets)
    expected = DATA[0, :256, :384].copy()
    expected[128:256, 128:256] = 0
    np.testing.assert_array_equal(read_region(open_source(path), 0, 0, 256, 384), expected[None])


@pytest.mark.parametrize("compression", ["jpeg", "jpeg2000"])
def test_svs_like_file(tmp_path, write_svs, compression):
    """Aperio layout: tiled RGB baseline with ``MPP`` in the description, stripped thumbnail, a level."""
    path = write_svs(tmp_path / "slide.svs", compression)
    info = open_source(path)
    assert info.shape_cyx == (3, 700, 900) and info.dtype == "uint8"
    assert info.pixel_size_um == pytest.approx((0.25, 0.25))
    assert info.channel_names == ("red", "green", "blue")
    whole = _tifffile_cyx(path)
    np.testing.assert_array_equal(read_region(info, 0, 0, 700, 900), whole)
    np.testing.assert_array_equal(read_region(info, 200, 300, 600, 700), whole[:, 200:600, 300:700])


@pytest.mark.parametrize(("names", "roles"), [
    (["dystrophin", "VDAC"], {"membrane": 0, "mito": 1}),
    (["DAPI", "Laminin", "VDAC1"], {"dapi": 0, "membrane": 1, "mito": 2}),
    (["MyHC I", "MyHC IIa", "MyHC IIx", "WGA"], {"myh1": 0, "myh2a": 1, "myh2x": 2, "membrane": 3}),
    (["myh1", "myh2a", "myh2x", "membrane"], {"myh1": 0, "myh2a": 1, "myh2x": 2, "membrane": 3}),
    (["BA-D5", "SC-71", "6H1", "laminin", "Hoechst"], {"myh1": 0, "myh2a": 1, "myh2x": 2, "membrane": 3, "dapi": 4}),
    (["MYH7", "MYH2", "MYH1", "dystrophin"], {"myh1": 0, "myh2a": 1, "myh2x": 2, "membrane": 3}),
    (["Type I", "Type IIa", "caveolin-3"], {"myh1": 0, "myh2a": 1, "membrane": 2}),
    (["channel0", "channel1"], {}),
])
def test_channel_names_give_roles(names, roles):
    assert assign_roles(names) == roles
