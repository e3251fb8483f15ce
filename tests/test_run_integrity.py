"""``run`` trusts only verified outputs: damage is found, named and repaired; settings changes redo what they shape.

Every rerun here starts from a copy of one clean run of a small synthetic slide and
is compared with it: labels (every level of fibres, regions and folds) and tables
must come out identical after the repair.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from nclsm_scale.config import RunConfig
from nclsm_scale.layout import RunLayout
from nclsm_scale.run import ARCHIVE_KEY, STAGES, run_archive
from nclsm_scale.state import StateStore

NAME = "S5"
FAULTS = ("delete", "truncate", "alter")


@pytest.fixture(scope="module")
def cfg():
    return RunConfig.model_validate({
        "synth": {"size_px": [768, 768], "seed": 5},
        "convert": {"chunk_px": 128, "min_level_px": 64},
        "grid": {"block_px": 256},
        "model": {"window_px": 576},  # one window covers the 384 um slide (the default 1024 px would be 3x the work)
        "report": {"thumbnail_px": 300, "geojson": False},
    })


@pytest.fixture(scope="module")
def archive(tmp_path_factory, cfg):
    from nclsm_scale.synth import write_section

    root = tmp_path_factory.mktemp("archive")
    write_section(root / f"{NAME}.ome.tiff", cfg.synth)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, archive, cfg, client):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = run_archive(archive, run_dir, cfg, client, progress=False)
    assert result.ok
    return run_dir


def _copy(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


def _outputs(run_dir: Path) -> dict[str, object]:
    """What must be identical between runs: every label level and the per-fibre tables."""
    layout = RunLayout(run_dir)
    out: dict[str, object] = {}
    for label in ("fibres", "regions", "folds"):
        group = zarr.open_group(str(layout.slide(NAME) / "labels" / label), mode="r")
        for key in sorted(k for k, _ in group.arrays()):
            out[f"{label}/{key}"] = group[key][:]
    for table in (layout.measure_table(NAME), layout.curate_table(NAME), layout.fibre_table(NAME)):
        out[table.relative_to(run_dir).as_posix()] = pd.read_parquet(table)
    return out


def _assert_same(run_dir: Path, reference: Path) -> None:
    got, want = _outputs(run_dir), _outputs(reference)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[key], value, obj=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def _damage(run_dir: Path, stage: str, fault: str, rng: random.Random, chunks_only: bool = False) -> str:
    """Damage one file the stage wrote (from its manifest); return its path relative to the run."""
    key = ARCHIVE_KEY if stage == "report" else NAME
    files = sorted(f for f in StateStore(run_dir / "state.sqlite").manifest(key, stage)["files"]
                   if "/c/" in f or not chunks_only)
    rel = rng.choice(files)
    path = run_dir / rel
    data = path.read_bytes()
    if fault == "delete":
        path.unlink()
    elif fault == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte changed: only a checksum sees it
        i = rng.randrange(len(data))
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    return rel


def _trial(reference, archive, cfg, client, tmp_path, stage: str, fault: str, seed: int) -> None:
    run_dir = _copy(reference, tmp_path)
    rel = _damage(run_dir, stage, fault, random.Random(seed))
    result = run_archive(archive, run_dir, cfg, client, progress=False, verify=fault == "alter")
    assert result.ok
    named = result.damaged if stage == "report" else result.slides[0].damaged
    assert any(rel in line for line in named), (rel, named)
    assert any(rel in line for line in result.summary().splitlines() if line.startswith("REDONE"))
    if stage != "report":
        assert result.slides[0].ran == list(STAGES)[list(STAGES).index(stage):]
    _assert_same(run_dir, reference)


@pytest.mark.parametrize(("stage", "fault"), [("convert", "truncate"), ("segment", "delete"),
                                              ("measure", "alter"), ("curate", "delete"), ("report", "truncate")])
def test_a_damaged_output_is_named_redone_and_identical(reference, archive, cfg, client, tmp_path, stage, fault):
    _trial(reference, archive, cfg, client, tmp_path, stage, fault, seed=len(stage))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_fault_injection_sweep(reference, archive, cfg, client, tmp_path, seed):
    """24 trials: a random stage, a random file of it, deleted, truncated or altered."""
    rng = random.Random(1000 + seed)
    stage, fault = rng.choice([*STAGES, "report"]), rng.choice(FAULTS)
    _trial(reference, archive, cfg, client, tmp_path, stage, fault, seed=seed)


def test_an_altered_file_passes_the_cheap_check_and_fails_verify(reference, archive, cfg, client, tmp_path):
    run_dir = _copy(reference, tmp_path)
    rel = _damage(run_dir, "segment", "alter", random.Random(3))
    cheap = run_archive(archive, run_dir, cfg, client, progress=False)
    assert cheap.slides[0].ran == [] and cheap.slides[0].damaged == []
    verified = run_archive(archive, run_dir, cfg, client, progress=False, verify=True)
    assert verified.slides[0].ran == ["segment", "measure", "curate"]
    assert any(rel in d for d in verified.slides[0].damaged)
    _assert_same(run_dir, reference)


def test_a_lost_completion_mark_redoes_segment(reference, archive, cfg, client, tmp_path):
    """labels/fibres' metadata is outside segment's manifest (curate writes the classes into it), checked apart."""
    run_dir = _copy(reference, tmp_path)
    (RunLayout(run_dir).slide(NAME) / "labels" / "fibres" / "zarr.json").unlink()
    result = run_archive(archive, run_dir, cfg, client, progress=False)
    assert result.ok and result.slides[0].ran == ["segment", "measure", "curate"]
    assert any("labels/fibres/zarr.json: no completion mark" in line for line in result.slides[0].damaged)
    _assert_same(run_dir, reference)


@pytest.mark.parametrize(("setting", "redone"), [
    ({"grid": {"block_px": 512}}, []),
    ({"model": {"batch_size": 3}}, ["segment", "measure", "curate"]),
    ({"cluster": {"n_workers": 1}}, []),
    ({"curate": {"debris_max_um2": 400.0}}, ["curate"]),
    ({"measure": {"ring_width_um": 3.0}}, ["measure", "curate"]),
    ({"segment": {"min_seed_value": 0.55}}, ["segment", "measure", "curate"]),
    ({"convert": {"chunk_px": 256}}, list(STAGES)),
])
def test_a_changed_setting_redoes_its_stage_and_what_follows_only(reference, archive, cfg, client, tmp_path,
                                                                  setting, redone):
    run_dir = _copy(reference, tmp_path)
    changed = RunConfig.model_validate({**cfg.model_dump(mode="json"),
                                        **{k: {**cfg.model_dump(mode="json")[k], **v} for k, v in setting.items()}})
    result = run_archive(archive, run_dir, changed, client, progress=False)
    assert result.ok and result.slides[0].ran == redone and result.slides[0].damaged == []
    again = run_archive(archive, run_dir, changed, client, progress=False)
    assert again.slides[0].ran == []  # the new settings are now the recorded ones
    if not redone:
        _assert_same(run_dir, reference)


def test_a_report_setting_redoes_only_the_report(reference, archive, cfg, client, tmp_path):
    run_dir = _copy(reference, tmp_path)
    before = StateStore(run_dir / "state.sqlite").get(ARCHIVE_KEY, "report")
    changed = cfg.model_copy(update={"report": cfg.report.model_copy(update={"thumbnail_px": 200})})
    result = run_archive(archive, run_dir, changed, client, progress=False)
    after = StateStore(run_dir / "state.sqlite").get(ARCHIVE_KEY, "report")
    assert result.slides[0].ran == [] and after.started > before.started and after.status == "done"


def test_overrides_given_to_curate_are_applied_by_the_next_run(reference, archive, cfg, client, tmp_path):
    from nclsm_scale.curate import curate_slide

    run_dir = _copy(reference, tmp_path)
    layout = RunLayout(run_dir)
    fibre = int(pd.read_parquet(layout.fibre_table(NAME)).query("curation_class == 'AM'")["fibre_id"].iloc[0])
    csv = tmp_path / "fix.csv"
    csv.write_text(f"fibre_id,class\n{fibre},FAM\n")
    curate_slide(layout.slide(NAME), cfg, client, layout=layout, overrides=csv)
    result = run_archive(archive, run_dir, cfg, client, progress=False)
    assert result.slides[0].ran == ["curate"]
    table = pd.read_parquet(layout.fibre_table(NAME)).set_index("fibre_id")
    assert table.loc[fibre, "curation_class"] == "FAM"


def test_a_source_moved_away_keeps_the_converted_slide(reference, archive, cfg, client, tmp_path, caplog):
    run_dir = _copy(reference, tmp_path)
    moved = tmp_path / "archive"
    shutil.copytree(archive, moved)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path\n{moved / (NAME + '.ome.tiff')}\n")
    cfg_abs = cfg.model_copy(update={"archive": cfg.archive.model_copy(update={"allow_absolute_paths": True})})
    first = run_archive(manifest, run_dir, cfg_abs, client, progress=False)
    assert first.ok
    (moved / f"{NAME}.ome.tiff").unlink()
    with caplog.at_level("WARNING", logger="nclsm_scale.run"):
        result = run_archive(manifest, run_dir, cfg_abs, client, progress=False)
    assert result.ok and result.slides[0].ran == []
    assert "keeping its converted store" in caplog.text
    _assert_same(run_dir, reference)


def test_the_pixel_size_correction_redoes_everything_at_the_new_scale(tmp_path, cfg, client):
    """A TIFF without a pixel size, first run at a wrong --pixel-size, then corrected: results as a fresh run."""
    import tifffile

    from nclsm_scale.synth import generate_section

    s = generate_section(cfg.synth.model_copy(update={"size_px": (384, 384), "pixel_size_um": 1.0}))
    archive = tmp_path / "archive"
    archive.mkdir()
    tifffile.imwrite(archive / "P.tif", s.image, photometric="minisblack", metadata=None)

    def at(px: float) -> RunConfig:
        return cfg.model_copy(update={"convert": cfg.convert.model_copy(update={"pixel_size_um": px,
                                                                                "channels": ["membrane", "mito"]})})

    run_dir = tmp_path / "run"
    wrong = run_archive(archive, run_dir, at(0.5), client, progress=False)
    assert wrong.ok
    area_wrong = pd.read_parquet(RunLayout(run_dir).fibre_table("P"))["area_um2"].sum()
    fixed = run_archive(archive, run_dir, at(1.0), client, progress=False)
    assert fixed.ok and fixed.slides[0].ran == list(STAGES)
    fresh = run_archive(archive, tmp_path / "fresh", at(1.0), client, progress=False)
    got = pd.read_parquet(RunLayout(run_dir).fibre_table("P"))
    pd.testing.assert_frame_equal(got, pd.read_parquet(RunLayout(tmp_path / "fresh").fibre_table("P")))
    assert fresh.ok and 0.15 < area_wrong / got["area_um2"].sum() < 0.4  # about 1/4 at half the pixel size


def test_validate_names_a_deleted_chunk_and_deep_an_altered_one(reference, tmp_path, run_cli):
    run_dir = _copy(reference, tmp_path)
    store = RunLayout(run_dir).slide(NAME)
    assert run_cli("validate", str(store)).returncode == 0
    deleted = _damage(run_dir, "segment", "delete", random.Random(1), chunks_only=True)
    res = run_cli("validate", str(store))
    assert res.returncode != 0 and f"segment: {deleted}: missing" in res.stdout
    run_dir2 = _copy(reference, tmp_path / "b")
    altered = _damage(run_dir2, "convert", "alter", random.Random(2), chunks_only=True)
    store2 = RunLayout(run_dir2).slide(NAME)
    assert run_cli("validate", str(store2)).returncode == 0
    deep = run_cli("validate", "--deep", str(store2))
    assert deep.returncode != 0 and f"convert: {altered}: content differs (sha256)" in deep.stdout
