"""``run`` end to end on a real LocalCluster: a small synthetic archive with one corrupt slide."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nclsm_scale.config import RunConfig
from nclsm_scale.errors import StageError, ValidationError
from nclsm_scale.run import STAGES, run_archive
from nclsm_scale.state import StateStore


@pytest.fixture(scope="module")
def cfg():
    return RunConfig.model_validate({
        "synth": {"size_px": [1024, 1024]},
        "convert": {"chunk_px": 256, "min_level_px": 64},
        "grid": {"block_px": 256},
        "report": {"thumbnail_px": 400},
    })


@pytest.fixture(scope="module")
def archive(tmp_path_factory, cfg):
    """Two good 1024^2 px slides in sub-folders and a truncated copy of one; a manifest naming all three."""
    from nclsm_scale.synth import write_section

    root = tmp_path_factory.mktemp("archive")
    for i in (1, 2):
        (root / f"p{i}").mkdir()
        write_section(root / f"p{i}" / f"S{i}.ome.tiff", cfg.synth.model_copy(update={"seed": i}))
    data = (root / "p1" / "S1.ome.tiff").read_bytes()
    (root / "bad.ome.tiff").write_bytes(data[: len(data) // 2])
    (root / "manifest.csv").write_text(
        "path,subject,diagnosis,muscle\np1/S1.ome.tiff,P1,control,VL\np2/S2.ome.tiff,P2,IBM,VL\n"
        "bad.ome.tiff,P3,control,TA\n")
    return root


@pytest.fixture(scope="module")
def first(tmp_path_factory, archive, cfg, client):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    result = run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    records = {(r.slide, r.stage): r for r in StateStore(run_dir / "state.sqlite").records()}
    tables = {n: pd.read_parquet(run_dir / "tables" / "fibres" / f"{n}.parquet") for n in ("S1", "S2")}
    return run_dir, result, records, tables


def test_good_slides_complete_and_the_corrupt_one_is_reported(first, archive):
    run_dir, result, records, tables = first
    assert {s.name: s.status for s in result.slides} == {"S1": "done", "S2": "done", "bad": "failed"}
    assert not result.ok
    for name in ("S1", "S2"):
        assert all(records[(name, st)].status == "done" for st in STAGES)
        assert len(tables[name]) > 10 and "curation_class" in tables[name].columns
        assert (run_dir / "slides" / f"{name}.ome.zarr" / "labels" / "fibres").is_dir()
    bad = records[("bad", "convert")]
    assert bad.status == "failed" and "truncated" in bad.error and "\n" not in bad.error
    assert all(records[("bad", st)].status == "pending" for st in list(STAGES)[1:])
    slides = pd.read_parquet(run_dir / "tables" / "slides.parquet")
    assert sorted(slides["slide"]) == ["S1", "S2"]
    assert set(slides.loc[slides["slide"] == "S2", "diagnosis"]) == {"IBM"}
    assert result.report == run_dir / "report" / "index.html" and result.report.is_file()
    summary = result.summary().splitlines()
    assert summary[0].startswith("2 of 3 slide(s) done, 1 failed, 0 flagged by slide QC")
    assert str(archive / "bad.ome.tiff") in bad.error  # so the line names the file once
    assert [line for line in summary if line.startswith("FAILED")] == [f"FAILED bad at convert: {bad.error}"]
    log = (run_dir / "logs" / "run.log").read_text()
    assert "Traceback" in log and "bad: convert failed" in log and summary[0] in log
    assert not (run_dir / "run.lock").exists()


def test_run_json_records_provenance(first, cfg):
    run_dir = first[0]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["config"] == cfg.model_dump(mode="json")
    assert set(rec["fingerprints"]) == {"S1", "S2", "bad"} and all(len(f) == 16 for f in rec["fingerprints"].values())
    assert len(rec["model"]["sha256"]) == 64 and rec["model"]["used"] is True
    assert rec["versions"]["distributed"] and rec["started"] <= rec["ended"]
    assert set(rec["normalisation"]) == {"S1", "S2"}
    assert all(len(n["lo"]) == len(n["hi"]) >= 2 for n in rec["normalisation"].values())


def test_rerun_is_a_noop_for_done_stages_and_gives_identical_tables(first, archive, cfg, client):
    run_dir, _, before, tables = first
    mtimes = {n: os.stat(run_dir / "tables" / "fibres" / f"{n}.parquet").st_mtime_ns for n in tables}
    again = run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    after = {(r.slide, r.stage): r for r in StateStore(run_dir / "state.sqlite").records()}
    for name in ("S1", "S2"):
        assert next(s for s in again.slides if s.name == name).ran == []
        for st in STAGES:
            assert (after[(name, st)].started, after[(name, st)].attempts) == \
                (before[(name, st)].started, before[(name, st)].attempts)
        assert os.stat(run_dir / "tables" / "fibres" / f"{name}.parquet").st_mtime_ns == mtimes[name]
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tables" / "fibres" / f"{name}.parquet"),
                                      tables[name])
    assert after[("bad", "convert")].attempts == before[("bad", "convert")].attempts + 1  # failed work is retried
    assert [s.name for s in again.failed] == ["bad"]


def test_a_resumed_run_counts_skipped_work_apart_in_the_metrics(first, archive, cfg, client, scrape):
    """The scheduler outlives the run here (as with --scheduler): counters must not count done work again."""
    run_dir = first[0]
    url = f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}/metrics"
    before = scrape(url)
    run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["monitoring"]["metrics"] == url
    deadline = time.monotonic() + 20

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    while True:
        after = scrape(url)
        if delta('nclsm_slides_failed_total{stage="convert"}') == 1.0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for stage in STAGES:
        assert delta(f'nclsm_stages_skipped_total{{stage="{stage}"}}') == 2.0, stage  # S1, S2
        assert delta(f'nclsm_stage_seconds_count{{stage="{stage}"}}') == 0.0, stage  # nothing computed again
    assert delta("nclsm_slides_skipped_total") == 2.0 and delta("nclsm_slides_done_total") == 0.0
    assert delta("nclsm_fibres_total") == 0.0
    assert [after[f'nclsm_slides{{state="{k}"}}'] for k in ("pending", "running", "done", "failed")] == [0, 0, 2, 1]


def test_an_interrupted_stage_is_redone_from_where_it_stopped(first, archive, cfg, client):
    run_dir, _, _, tables = first
    st = StateStore(run_dir / "state.sqlite")
    st.start("S2", "curate", st.get("S2", "curate").fingerprint)  # as if killed during curate
    result = run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    s2 = next(s for s in result.slides if s.name == "S2")
    assert s2.ran == ["curate"] and s2.status == "done"
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tables" / "fibres" / "S2.parquet"), tables["S2"])


def test_a_second_run_is_refused_while_one_is_active(first, archive, cfg, client):
    run_dir = first[0]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "run.lock").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
        with pytest.raises(StageError, match="another run is active"):
            run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    finally:
        proc.kill()
        proc.wait()
        (run_dir / "run.lock").unlink()


def test_a_manifest_escaping_its_folder_stops_the_run_before_any_work(tmp_path, archive, cfg, client):
    (archive / "p1" / "evil.csv").write_text("path\n../bad.ome.tiff\n")
    with pytest.raises(ValidationError, match="outside the manifest's folder"):
        run_archive(archive / "p1" / "evil.csv", tmp_path / "run", cfg, client, progress=False)
    assert not (tmp_path / "run" / "slides").exists()


#: The CLI options that give ``cfg`` above.
CLI_SETTINGS = ("--set", "convert.chunk_px=256", "--set", "convert.min_level_px=64",
                "--set", "grid.block_px=256", "--set", "report.thumbnail_px=400")


def test_cli_exit_status_summary_and_performance_report(first, archive, client, capsys, tmp_path):
    from nclsm_scale.cli.app import main

    run_dir = first[0]
    perf = tmp_path / "perf" / "report.html"
    code = main(["run", str(archive), "--out", str(run_dir), "--manifest", str(archive / "manifest.csv"),
                 "--scheduler", client.scheduler.address, "--performance-report", str(perf), *CLI_SETTINGS])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 of 3 slide(s) done, 1 failed" in out and "FAILED bad at convert:" in out
    assert out.count("2 of 3 slide(s) done") == 1  # the summary is printed once (run.log has its own copy)
    html = perf.read_text()
    assert "Dask Performance Report" in html and "cdn.bokeh.org" not in html  # inline: opens offline


def test_outcomes_count_the_fibres_of_each_slide(first):
    _, result, _, tables = first
    assert {s.name: s.fibres for s in result.slides} == {"S1": len(tables["S1"]), "S2": len(tables["S2"]),
                                                         "bad": 0}


def test_the_runs_fibres_read_as_one_table_with_slide_and_manifest_columns(first):
    import pyarrow.dataset as ds

    import nclsm_scale

    run_dir, _, _, tables = first
    fibres = nclsm_scale.read_fibres(run_dir)
    pd.testing.assert_frame_equal(fibres, pd.concat([tables["S1"], tables["S2"]], ignore_index=True))
    assert list(fibres.columns[:5]) == ["slide", "subject", "diagnosis", "muscle", "fibre_id"]
    assert fibres.groupby("slide")["diagnosis"].unique().map(list).to_dict() == {"S1": ["control"], "S2": ["IBM"]}
    assert ds.dataset(run_dir / "tables" / "fibres", format="parquet").count_rows() == len(fibres)


def _same_results(run_dir: Path, reference: Path) -> None:
    """Fibre tables equal and label images identical (IDs are deterministic, so no renumbering)."""
    import zarr

    for name in ("S1", "S2"):
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tables" / "fibres" / f"{name}.parquet"),
                                      pd.read_parquet(reference / "tables" / "fibres" / f"{name}.parquet"))
        got = zarr.open_array(run_dir / "slides" / f"{name}.ome.zarr" / "labels" / "fibres" / "0", mode="r")[:]
        want = zarr.open_array(reference / "slides" / f"{name}.ome.zarr" / "labels" / "fibres" / "0", mode="r")[:]
        np.testing.assert_array_equal(got, want)


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, first, archive, cfg):
    """SIGKILL the worker process that is running a block task; its nanny restarts it and the run finishes."""
    from distributed import Client, LocalCluster

    killed: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as own:
        pids = own.run(os.getpid)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_archive, archive / "manifest.csv", tmp_path / "run", cfg, own, progress=False)
            while not running.done() and not killed:
                for addr, keys in own.processing().items():
                    if any(str(k).startswith(("seeds_task", "assign_task")) for k in keys) and addr in pids:
                        os.kill(pids[addr], signal.SIGKILL)
                        killed.append(addr)
                        break
                time.sleep(0.01)
            result = running.result(timeout=600)
        assert killed, "the run ended before a block task could be interrupted"
        assert set(own.run(os.getpid).values()).isdisjoint({pids[killed[0]]})  # the nanny started a new process
    assert {s.name: s.status for s in result.slides} == {"S1": "done", "S2": "done", "bad": "failed"}
    _same_results(tmp_path / "run", first[0])


def test_a_client_killed_mid_run_resumes_without_redoing_work(tmp_path, first, archive, client):
    """SIGKILL the ``run`` command after some stages finished; the rerun redoes only what was not done."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "nclsm_scale", "run", str(archive / "manifest.csv"), "--out", str(run_dir),
            "--scheduler", client.scheduler.address, *CLI_SETTINGS]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_before: dict = {}
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if (run_dir / "state.sqlite").is_file():
                records = StateStore(run_dir / "state.sqlite").records()
                done = {(r.slide, r.stage): r for r in records if r.status == "done"}
                if done and any(r.status == "running" for r in records):
                    proc.kill()
                    done_before = done
                    break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert done_before, "the run ended before it could be killed"
    assert (run_dir / "run.lock").exists()  # left behind by the killed process: must not block the rerun
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1, rerun.stderr  # the corrupt slide still fails
    assert "2 of 3 slide(s) done, 1 failed" in rerun.stdout
    after = {(r.slide, r.stage): r for r in StateStore(run_dir / "state.sqlite").records()}
    for key, rec in done_before.items():
        assert (after[key].status, after[key].started, after[key].attempts) == ("done", rec.started, rec.attempts)
    assert all(after[(n, st)].status == "done" for n in ("S1", "S2") for st in STAGES)
    _same_results(run_dir, first[0])


def test_sigterm_stops_the_run_promptly_releases_the_lock_and_the_rerun_completes(tmp_path, first, archive, cfg,
                                                                                  client):
    """``kubectl delete pod`` / ``scancel`` send SIGTERM: the run stops within seconds, exit 143, nothing failed."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "nclsm_scale", "run", str(archive / "manifest.csv"), "--out", str(run_dir),
            "--scheduler", client.scheduler.address, *CLI_SETTINGS]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if (run_dir / "state.sqlite").is_file():
                records = StateStore(run_dir / "state.sqlite").records()
                if any(r.status == "running" and r.stage == "segment" for r in records):
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be terminated"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        stopped_s = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err
    assert stopped_s < 20  # 3-8 s here: the nanny gives a busy worker 4 s before killing it
    assert not (run_dir / "run.lock").exists()
    records = StateStore(run_dir / "state.sqlite").records()
    assert not [r for r in records if r.slide != "bad" and r.status == "failed"]
    result = run_archive(archive / "manifest.csv", run_dir, cfg, client, progress=False)
    assert {s.name: s.status for s in result.slides} == {"S1": "done", "S2": "done", "bad": "failed"}
    _same_results(run_dir, first[0])


def test_a_full_disk_fails_the_slide_once_naming_the_run_directory(tmp_path, archive, cfg, client, monkeypatch):
    """ENOSPC names no file: the slide fails in one line naming the run directory, without retries."""
    import errno

    def full(job, cfg, client):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(STAGES, "convert", full)
    result = run_archive(archive / "p1", tmp_path / "run", cfg, client, progress=False)
    (s1,) = result.slides
    assert (s1.status, s1.stage) == ("failed", "convert")
    assert s1.error == f"{tmp_path / 'run'}: cannot write: No space left on device"
    assert StateStore(tmp_path / "run" / "state.sqlite").get("S1", "convert").attempts == 1


def test_an_unwritable_run_directory_is_refused_before_the_client_is_opened(tmp_path, archive, cfg):
    from nclsm_scale.errors import SlideWriteError

    (tmp_path / "file").write_text("not a folder")
    opened = []
    with pytest.raises(SlideWriteError, match=r"file/run: cannot write: "):
        run_archive(archive, tmp_path / "file" / "run", cfg, lambda: opened.append(1), progress=False)
    assert not opened
