"""convert: every input layout to NGFF 0.5 on a real LocalCluster; resume, skip, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from nclsm_scale.config import ConvertConfig
from nclsm_scale.convert import check_plausible, convert, plan_passes
from nclsm_scale.errors import SlideRefusedError
from nclsm_scale.io.pyramid import downsample_mean
from nclsm_scale.io.readers import SourceInfo
from nclsm_scale.validate import check_store

RNG = np.random.default_rng(7)
DATA = RNG.integers(0, 65535, (2, 1100, 900), dtype=np.uint16)
CFG = ConvertConfig(chunk_px=128, shard_px=512, min_level_px=128, task_px=512)


def _ome_tiff(path: Path, data: np.ndarray) -> Path:
    with tifffile.TiffWriter(path) as w:
        meta = {"axes": "CYX", "Channel": {"Name": ["Dystrophin", "VDAC"]}, "PhysicalSizeX": 0.5,
                "PhysicalSizeY": 0.5}
        w.write(data, tile=(256, 256), subifds=2, compression="zlib", metadata=meta)
        w.write(data[:, ::2, ::2], tile=(256, 256), subfiletype=1, compression="zlib")
        w.write(data[:, ::4, ::4], tile=(256, 256), subfiletype=1, compression="zlib")
    return path


def _assert_store(store: Path, level0: np.ndarray) -> zarr.Group:
    assert check_store(store) == []
    group = zarr.open_group(str(store), mode="r")
    paths = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    np.testing.assert_array_equal(group[paths[0]][:], level0)
    expected = level0
    for p in paths[1:]:
        expected = downsample_mean(expected)
        np.testing.assert_array_equal(group[p][:], expected)
    assert max(group[paths[-1]].shape[-2:]) <= 128
    return group


def _write_input(kind: str, tmp: Path) -> tuple[Path, np.ndarray]:
    if kind == "ome-tiff":
        return _ome_tiff(tmp / "a.ome.tif", DATA), DATA
    if kind in ("bigtiff-u8", "bigtiff-u16"):
        plane = DATA[0].astype(np.uint8 if kind.endswith("u8") else np.uint16)
        tifffile.imwrite(tmp / "b.tif", plane, bigtiff=True, rowsperstrip=64)
        return tmp / "b.tif", plane[None]
    if kind == "png":
        rgb = RNG.integers(0, 255, (300, 500, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp / "c.png")
        return tmp / "c.png", np.moveaxis(rgb, -1, 0)[:2]
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    v4 = kind == "ome-zarr-0.4"
    group = zarr.open_group(str(tmp / "d.ome.zarr"), mode="w", zarr_format=2 if v4 else 3)
    write_image(DATA, group, axes="cyx", fmt=FormatV04() if v4 else FormatV05(), scale_factors=[2])
    return tmp / "d.ome.zarr", DATA


@pytest.mark.parametrize("kind", ["ome-tiff", "bigtiff-u8", "bigtiff-u16", "png", "ome-zarr-0.4", "ome-zarr-0.5"])
def test_convert_layouts_exact_and_valid(tmp_path, client, kind):
    src, level0 = _write_input(kind, tmp_path)
    (result,) = convert([src], tmp_path / "out", CFG, client)
    assert result.status == "converted", result.message
    group = _assert_store(Path(result.store), level0)
    nclsm = group.attrs["nclsm"]
    assert nclsm["complete"] is True and nclsm["source"]["size"] > 0
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())  # markers removed
    if kind == "ome-tiff":
        assert nclsm["roles"] == {"membrane": 0, "mito": 1} and nclsm["pixel_size_known"] is True
        assert group["0"].shards == (2, 512, 512)
    if kind == "png":
        assert nclsm["pixel_size_known"] is False


def test_many_channels_convert_in_channel_groups(tmp_path, client):
    data = RNG.integers(0, 65535, (11, 700, 600), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "imc.tif", data, tile=(128, 128), compression="zlib", metadata={"axes": "CYX"})
    (result,) = convert([tmp_path / "imc.tif"], tmp_path / "out", CFG.model_copy(update={"task_channels": 4}), client)
    assert result.status == "converted", result.message
    group = _assert_store(Path(result.store), data)
    assert group["0"].shards == (4, 512, 512) and group["0"].chunks == (1, 128, 128)


def test_pixel_size_option_and_channels(tmp_path, client):
    tifffile.imwrite(tmp_path / "p.tif", DATA, metadata=None)
    cfg = CFG.model_copy(update={"pixel_size_um": 0.25, "channels": ["laminin", "porin"]})
    (result,) = convert([tmp_path / "p.tif"], tmp_path / "out", cfg, client)
    group = zarr.open_group(result.store, mode="r")
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 0.5, 0.5]
    assert group.attrs["nclsm"]["roles"] == {"membrane": 0, "mito": 1}
    assert group.attrs["nclsm"]["pixel_size_from"] == "option"


def _source(shape_cyx: tuple[int, int, int], pixel_size_um: float | None) -> SourceInfo:
    size = (pixel_size_um, pixel_size_um) if pixel_size_um else None
    return SourceInfo("s.tif", "tiff", shape_cyx, "uint16", ("a", "b"), size, "CYX", (0, 1))


def test_plausibility_gates_pixel_size_and_extent():
    check_plausible(_source((2, 1100, 900), 0.5), CFG)  # 450 um across
    check_plausible(_source((2, 10, 10), None), CFG)  # no pixel size: scales stay in pixels, segment refuses
    for px in (1000.0, 0.001, 20.5, 0.049):
        with pytest.raises(SlideRefusedError, match=r"s\.tif: the file says .* um/px, outside the plausible 0\.05-20"):
            check_plausible(_source((2, 1100, 900), px), CFG)
    with pytest.raises(SlideRefusedError,
                       match=r"s\.tif: 10 x 10 px at 0\.5 um/px is 5 x 5 um, under convert\.min_slide"):
        check_plausible(_source((2, 10, 10), 0.5), CFG)
    with pytest.raises(SlideRefusedError, match="convert.pixel_size_um gives 500 um/px"):
        check_plausible(_source((2, 1100, 900), None), CFG.model_copy(update={"pixel_size_um": 500.0}))
    check_plausible(_source((2, 100, 100), 1000.0), CFG.model_copy(update={"max_pixel_size_um": 2000.0}))
    with pytest.raises(ValueError, match="must be below max_pixel_size_um"):
        ConvertConfig(min_pixel_size_um=5.0, max_pixel_size_um=1.0)


def test_an_implausible_slide_is_refused_before_anything_is_written(tmp_path, client):
    src = tmp_path / "far.ome.tif"
    with tifffile.TiffWriter(src) as w:
        w.write(DATA[:, :256, :256], metadata={"axes": "CYX", "PhysicalSizeX": 1000.0, "PhysicalSizeY": 1000.0})
    (result,) = convert([src], tmp_path / "out", CFG, client)
    assert result.status == "failed" and f"{src}: the file says 1000 um/px" in result.message
    assert not (tmp_path / "out").exists()


def test_rerun_skips_overwrite_redoes_and_clash_refused(tmp_path, client):
    src = _ome_tiff(tmp_path / "a.ome.tif", DATA)
    out = tmp_path / "out"
    convert([src], out, CFG, client)
    stamp = (out / "a.ome.zarr" / "zarr.json").stat().st_mtime_ns
    (again,) = convert([src], out, CFG, client)
    assert again.status == "skipped" and (out / "a.ome.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    (redo,) = convert([src], out, CFG.model_copy(update={"overwrite": True}), client)
    assert redo.status == "converted"
    other = tmp_path / "elsewhere"
    other.mkdir()
    _ome_tiff(other / "a.ome.tif", DATA[:, :500])
    (clash,) = convert([other / "a.ome.tif"], out, CFG, client)
    assert clash.status == "failed" and "--overwrite" in clash.message


def test_bad_inputs_do_not_stop_others(tmp_path, client):
    good = _ome_tiff(tmp_path / "good.ome.tif", DATA)
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, DATA, tile=(128, 128), compression="zlib")
    cut.write_bytes(cut.read_bytes()[:200_000])
    bad_tile = tmp_path / "badtile.tif"
    tifffile.imwrite(bad_tile, DATA[0], tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(bad_tile) as tif:
        offset = tif.pages.first.dataoffsets[5]
    raw = bytearray(bad_tile.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    bad_tile.write_bytes(bytes(raw))
    results = convert([cut, bad_tile, good], tmp_path / "out", CFG, client)
    assert [r.status for r in results] == ["failed", "failed", "converted"]
    assert "cut.tif" in results[0].message and "truncated" in results[0].message
    assert "badtile.tif: cannot decode region" in results[1].message
    assert check_store(tmp_path / "out" / "badtile.ome.zarr")  # left incomplete, reported as such


def test_unwritable_output(tmp_path, client):
    src = _ome_tiff(tmp_path / "a.ome.tif", DATA)
    (tmp_path / "file").write_text("not a folder")
    (result,) = convert([src], tmp_path / "file" / "out", CFG, client)
    assert result.status == "failed" and "cannot write" in result.message


def test_plan_passes_align_to_shards():
    assert plan_passes([512, 256, 128, 128], 512) == [(0, 3, 512), (3, 1, 512)]
    assert plan_passes([128, 128, 128], 512) == [(0, 3, 512)]


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nclsm_scale", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_truncated_file_exit_1_others_convert(tmp_path):
    good = _ome_tiff(tmp_path / "good.ome.tif", DATA[:, :300, :300])
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, DATA, tile=(128, 128), compression="zlib")
    cut.write_bytes(cut.read_bytes()[:100_000])
    proc = _cli("convert", str(cut), str(good), "--out", str(tmp_path / "out"), "--workers", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "failed" in out and "cut.tif" in out and "truncated" in out
    assert "converted" in out and "1 of 2 slides ok, 1 failed" in out
    assert check_store(tmp_path / "out" / "good.ome.zarr") == []


def _arrays_and_attrs(store: Path) -> dict:
    group = zarr.open_group(str(store), mode="r")
    out = {"attrs": json.dumps(dict(group.attrs), sort_keys=True)}
    for name, arr in group.arrays():
        out[name] = arr[:]
    return out


def test_sigkill_midway_then_resume_is_identical(tmp_path):
    data = RNG.integers(0, 65535, (1, 1024, 1024), dtype=np.uint16)
    src = tmp_path / "k.tif"
    tifffile.imwrite(src, data[0], tile=(64, 64))
    opts = ["--chunk", "64", "--set", "convert.shard_px=0", "--set", "convert.task_px=64",
            "--set", "convert.min_level_px=256", "--workers", "1"]
    state = tmp_path / "out" / ".k.convert"
    proc = _cli("convert", str(src), "--out", str(tmp_path / "out"), *opts, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(state.glob("L0_*"))) < 20:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = sorted(p.name for p in state.glob("L0_*"))
    assert 20 <= len(done) < 256, "kill did not land midway"
    store = tmp_path / "out" / "k.ome.zarr"
    assert zarr.open_group(str(store), mode="r").attrs["nclsm"]["complete"] is False
    chunk_files = [store / "0" / "c" / "0" / str(int(n.split("_")[-2]) // 64) / str(int(n.split("_")[-1]) // 64)
                   for n in done]  # markers are L<level>_c<first channel>_<y>_<x>
    stamps = [f.stat().st_mtime_ns for f in chunk_files]
    resumed = _cli("convert", str(src), "--out", str(tmp_path / "out"), *opts)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resumed, {len(done)} regions already done" in out
    assert [f.stat().st_mtime_ns for f in chunk_files] == stamps  # finished regions not redone
    clean = _cli("convert", str(src), "--out", str(tmp_path / "clean"), *opts)
    assert clean.communicate(timeout=300) and clean.returncode == 0
    a, b = _arrays_and_attrs(store), _arrays_and_attrs(tmp_path / "clean" / "k.ome.zarr")
    assert a.keys() == b.keys() and a["attrs"] == b["attrs"]
    for key in a:
        if key != "attrs":
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["0"], data)
    assert not state.exists()


def test_synth_section_converts_exactly(tmp_path, client):
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth.write import write_section

    paths = write_section(tmp_path / "syn", SynthConfig(size_px=(768, 640), chunk_px=256, tile_px=128, folds=0))
    (result,) = convert([paths["image"]], tmp_path / "out", CFG, client)
    assert result.status == "converted", result.message
    import tifffile as tf

    with tf.TiffFile(paths["image"]) as tif:
        level0 = tif.series[0].asarray()
    group = _assert_store(Path(result.store), level0.reshape((-1, *level0.shape[-2:])))
    assert group.attrs["nclsm"]["pixel_size_known"] is True


def test_svs_like_jpeg_slide_converts_as_decoded(tmp_path, client, write_svs):
    src = write_svs(tmp_path / "aperio.svs", "jpeg", level=False)
    with tifffile.TiffFile(src) as tif:
        decoded = np.moveaxis(tif.series[0].asarray(), -1, 0)
    (result,) = convert([src], tmp_path / "out", CFG, client)
    assert result.status == "converted", result.message
    group = _assert_store(Path(result.store), decoded)
    ms = group.attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.25, 0.25]
    assert group.attrs["nclsm"]["pixel_size_from"] == "file"
