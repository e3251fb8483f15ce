"""Object storage: a run from and to S3 (moto's server, started here), and the sync underneath it."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from nclsm_scale.archive import discover
from nclsm_scale.config import ArchiveConfig, RunConfig
from nclsm_scale.errors import SlideReadError, SlideWriteError, ValidationError
from nclsm_scale.run import STAGES, run_archive
from nclsm_scale.state import StateStore
from nclsm_scale.storage import (
    RunSync,
    fetch,
    filesystem,
    is_remote,
    local_path,
    redact_options,
    work_dir_for,
)

BUCKET = "nclsm"


@pytest.fixture(scope="module")
def s3():
    """An S3 server (moto) on a free local port; the AWS environment points every client at it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            mp.setenv(key, value)
        fs, _ = filesystem(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        yield fs
    server.stop()


def _tree(fs, prefix: str) -> dict[str, int]:
    return {p[len(prefix) + 1:]: int(i["size"]) for p, i in fs.find(prefix, detail=True).items()}


def test_urls_paths_and_redaction(tmp_path, monkeypatch):
    assert is_remote("s3://b/x") and is_remote("memory://x")
    assert not is_remote("/data/archive") and not is_remote("file:///data") and not is_remote(Path("s3:/x"))
    assert local_path("file:///data/a.csv") == Path("/data/a.csv")
    monkeypatch.setenv("HOME", str(tmp_path))
    work = work_dir_for("s3://b/run", None)
    assert work.parent == tmp_path / ".cache" / "nclsm-scale" / "runs"
    assert work == work_dir_for("s3://b/run/", None) != work_dir_for("s3://b/run2", None)
    assert work_dir_for("s3://b/run", str(tmp_path / "w")).parent == tmp_path / "w"
    assert redact_options({"endpoint_url": "http://x", "key": "AK", "client_kwargs": {"aws_secret_access_key": "s"}}) \
        == {"endpoint_url": "http://x", "key": "***", "client_kwargs": {"aws_secret_access_key": "***"}}


def _local_run(root: Path) -> Path:
    (root / "slides" / "A.ome.zarr" / "c").mkdir(parents=True)
    (root / "slides" / "A.ome.zarr" / "zarr.json").write_text("{}")
    (root / "slides" / "A.ome.zarr" / "c" / "0").write_bytes(b"0123456789")
    (root / "inputs").mkdir()
    (root / "inputs" / "A.tif").write_bytes(b"source")
    (root / "run.lock").write_text("{}")
    (root / ".run.json.tmp").write_text("partial")
    (root / "run.json").write_text('{"a": 1}')
    st = StateStore(root / "state.sqlite")  # WAL mode: recent rows live in state.sqlite-wal
    st.register("A", "s3://x/A.tif", tuple(STAGES))
    st.start("A", "convert", "fp")
    st.finish("A", "convert", 1.0)
    return root


def test_push_uploads_only_what_is_missing_or_changed_and_never_deletes(s3, tmp_path):
    url = f"s3://{BUCKET}/sync-push"
    s3.pipe(f"{BUCKET}/sync-push/notes/keep.txt", b"not ours")
    root = _local_run(tmp_path / "run")
    sync = RunSync(url, root)
    assert sorted(sync.push()) == ["run.json", "slides/A.ome.zarr/c/0", "slides/A.ome.zarr/zarr.json", "state.sqlite"]
    assert set(_tree(s3, f"{BUCKET}/sync-push")) == {"notes/keep.txt", "run.json", "slides/A.ome.zarr/c/0",
                                                     "slides/A.ome.zarr/zarr.json", "state.sqlite"}
    assert sync.push() == ["state.sqlite"]  # the database always goes up (its size says nothing)

    chunk = root / "slides" / "A.ome.zarr" / "c" / "0"
    time.sleep(0.01)
    chunk.write_bytes(b"9876543210")  # same size, new content
    s3.rm(f"{BUCKET}/sync-push/run.json")  # lost remotely
    assert sync.push(["slides", "run.json"]) == ["run.json", "slides/A.ome.zarr/c/0"]
    assert s3.cat(f"{BUCKET}/sync-push/slides/A.ome.zarr/c/0") == b"9876543210"

    shutil.rmtree(root / "slides")
    (root / "run.json").write_text('{"a": 22}')
    assert RunSync(url, root).push() == ["run.json", "state.sqlite"]  # the record survives a new process
    assert set(_tree(s3, f"{BUCKET}/sync-push")) >= {"notes/keep.txt", "slides/A.ome.zarr/c/0"}  # nothing deleted

    snapshot = tmp_path / "state.sqlite"
    s3.get_file(f"{BUCKET}/sync-push/state.sqlite", str(snapshot))
    assert [(r.slide, r.stage, r.status) for r in StateStore(snapshot).records() if r.status == "done"] == \
        [("A", "convert", "done")]


def test_pull_into_an_empty_folder_then_push_finds_nothing_new(s3, tmp_path):
    url = f"s3://{BUCKET}/sync-pull"
    RunSync(url, _local_run(tmp_path / "a")).push()
    fresh = tmp_path / "b"
    sync = RunSync(url, fresh)
    assert sync.exists("state.sqlite") and not sync.exists("run.lock")
    assert sync.pull()[-1] == "state.sqlite"  # the database comes last
    assert (fresh / "slides" / "A.ome.zarr" / "c" / "0").read_bytes() == b"0123456789"
    assert not (fresh / "inputs").exists() and not (fresh / "run.lock").exists()
    assert StateStore(fresh / "state.sqlite").get("A", "convert").status == "done"
    assert sync.push() == ["state.sqlite"]


def test_a_failed_upload_names_the_url(s3, tmp_path):
    with pytest.raises(SlideWriteError, match="s3://no-such-bucket/run"):
        RunSync("s3://no-such-bucket/run", _local_run(tmp_path / "run")).push()


def test_fetch_a_file_a_store_and_a_missing_object(s3, tmp_path):
    s3.pipe({f"{BUCKET}/fetch/A.tif": b"image", f"{BUCKET}/fetch/B.ome.zarr/zarr.json": b"{}",
             f"{BUCKET}/fetch/B.ome.zarr/0/c/0": b"chunk"})
    assert fetch(f"s3://{BUCKET}/fetch/A.tif", tmp_path / "in" / "A.tif")
    assert (tmp_path / "in" / "A.tif").read_bytes() == b"image"
    assert fetch(f"s3://{BUCKET}/fetch/B.ome.zarr", tmp_path / "in" / "B.ome.zarr")
    assert (tmp_path / "in" / "B.ome.zarr" / "0" / "c" / "0").read_bytes() == b"chunk"
    assert not fetch(f"s3://{BUCKET}/fetch/C.tif", tmp_path / "in" / "C.tif", missing_ok=True)
    with pytest.raises(SlideReadError, match=f"s3://{BUCKET}/fetch/C.tif: no such object"):
        fetch(f"s3://{BUCKET}/fetch/C.tif", tmp_path / "in" / "C.tif")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["A.tif", "B.ome.zarr"]  # no partial files


def test_remote_discovery_follows_the_folder_rules(s3, tmp_path):
    base = f"{BUCKET}/disc"
    s3.pipe({f"{base}/p1/A.ome.tiff": b"x", f"{base}/p1/A.fibres.ome.tiff": b"x", f"{base}/p2/deep/B.SVS": b"x",
             f"{base}/notes.txt": b"x", f"{base}/.hidden/H.tif": b"x", f"{base}/C.ome.zarr/zarr.json": b"{}",
             f"{base}/C.ome.zarr/0/inner.tif": b"x"})
    slides = discover(f"s3://{base}", ArchiveConfig(), inputs_dir=tmp_path / "inputs")
    assert [(s.name, s.url, s.path) for s in slides] == [
        ("C", f"s3://{base}/C.ome.zarr", tmp_path / "inputs" / "C.ome.zarr"),
        ("A", f"s3://{base}/p1/A.ome.tiff", tmp_path / "inputs" / "A.ome.tiff"),
        ("B", f"s3://{base}/p2/deep/B.SVS", tmp_path / "inputs" / "B.SVS"),
    ]
    assert slides[1].source == f"s3://{base}/p1/A.ome.tiff"
    with pytest.raises(ValidationError, match="no slides found"):
        discover(f"s3://{BUCKET}/nothing-here", ArchiveConfig(), inputs_dir=tmp_path)
    with pytest.raises(ValidationError, match="cannot list the archive"):
        discover("s3://no-such-bucket/archive", ArchiveConfig(), inputs_dir=tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_remote_manifest_resolves_against_its_prefix_and_keeps_metadata(s3, tmp_path, fmt):
    df = pd.DataFrame({"path": ["img/A.ome.tiff", "./img/../B.tif"], "subject": ["P1", "P2"]})
    data = df.to_csv(index=False).encode() if fmt == "csv" else df.to_parquet()
    s3.pipe(f"{BUCKET}/man/m.{fmt}", data)
    slides = discover(f"s3://{BUCKET}/man/m.{fmt}", ArchiveConfig(), inputs_dir=tmp_path)
    assert [(s.name, s.url, s.meta) for s in slides] == [
        ("A", f"s3://{BUCKET}/man/img/A.ome.tiff", {"subject": "P1"}),
        ("B", f"s3://{BUCKET}/man/B.tif", {"subject": "P2"})]
    cfg = ArchiveConfig(manifest=f"s3://{BUCKET}/man/m.{fmt}")  # --manifest wins over the archive argument
    assert [s.name for s in discover("/nonexistent", cfg, inputs_dir=tmp_path)] == ["A", "B"]


@pytest.mark.parametrize("entry", ["../outside.tif", "sub/../../outside.tif", "../../../other-bucket/x.tif"])
def test_remote_manifest_cannot_lead_outside_its_prefix(s3, tmp_path, entry):
    s3.pipe(f"{BUCKET}/esc/archive/m.csv", f"path\n{entry}\n".encode())
    with pytest.raises(ValidationError, match="outside the manifest's folder"):
        discover(f"s3://{BUCKET}/esc/archive/m.csv", ArchiveConfig(), inputs_dir=tmp_path)
    (s,) = discover(f"s3://{BUCKET}/esc/archive/m.csv", ArchiveConfig(allow_absolute_paths=True), inputs_dir=tmp_path)
    assert s.name in ("outside", "x") and not s.url.startswith(f"s3://{BUCKET}/esc/archive/")


@pytest.mark.parametrize("entry", ["/esc/x.tif", "s3://elsewhere/x.tif"])
def test_absolute_entries_of_a_remote_manifest_need_permission(s3, tmp_path, entry):
    s3.pipe(f"{BUCKET}/abs/m.csv", f"path\n{entry}\n".encode())
    with pytest.raises(ValidationError, match="absolute path"):
        discover(f"s3://{BUCKET}/abs/m.csv", ArchiveConfig(), inputs_dir=tmp_path)


def test_a_missing_remote_manifest_is_a_validation_error(s3, tmp_path):
    with pytest.raises(ValidationError, match="cannot read the manifest"):
        discover(f"s3://{BUCKET}/nope/m.csv", ArchiveConfig(), inputs_dir=tmp_path)


# --- a whole run, S3 to S3 ---------------------------------------------------------------------------------

#: The CLI options of a small, fast run (512^2 px sections).
CLI_SETTINGS = ("--set", "convert.chunk_px=256", "--set", "convert.min_level_px=64",
                "--set", "grid.block_px=256", "--set", "report.thumbnail_px=200")


@pytest.fixture(scope="module")
def remote_archive(s3, tmp_path_factory):
    """One good 512^2 px synthetic slide and a truncated one, in s3://nclsm/archive."""
    from nclsm_scale.config import SynthConfig
    from nclsm_scale.synth import write_section

    root = tmp_path_factory.mktemp("s3-archive")
    (root / "p1").mkdir()
    write_section(root / "p1" / "S1.ome.tiff", SynthConfig(size_px=(512, 512), seed=1))
    data = (root / "p1" / "S1.ome.tiff").read_bytes()
    (root / "bad.ome.tiff").write_bytes(data[: len(data) // 2])
    s3.put(str(root) + "/", f"{BUCKET}/archive", recursive=True)
    return f"s3://{BUCKET}/archive"


@pytest.fixture(scope="module")
def remote_first(s3, remote_archive, tmp_path_factory, client):
    """The first run through the CLI: s3://nclsm/archive -> s3://nclsm/run, staged in a temporary work folder."""
    from nclsm_scale.cli.app import main

    work = tmp_path_factory.mktemp("work")
    code = main(["run", remote_archive, "--out", f"s3://{BUCKET}/run", "--scheduler", client.scheduler.address,
                 *CLI_SETTINGS, "--set", f"archive.work_dir={work}"])
    local = work_dir_for(f"s3://{BUCKET}/run", str(work))
    state = tmp_path_factory.mktemp("state") / "state.sqlite"
    s3.get_file(f"{BUCKET}/run/state.sqlite", str(state))
    records = {(r.slide, r.stage): r for r in StateStore(state).records()}
    with s3.open(f"{BUCKET}/run/tables/fibres/S1.parquet", "rb") as fh:
        table = pd.read_parquet(fh)
    return code, work, local, records, table


def test_a_run_reads_slides_from_s3_and_writes_the_run_there(s3, remote_first):
    code, _, local, records, table = remote_first
    assert code == 1  # the truncated slide fails
    objects = _tree(s3, f"{BUCKET}/run")
    for name in ("run.json", "state.sqlite", "tables/fibres/S1.parquet", "tables/slides.parquet",
                 "report/index.html", "logs/run.log", "slides/S1.ome.zarr/zarr.json",
                 "slides/S1.ome.zarr/labels/fibres/zarr.json", "slides/S1.ome.zarr/labels/regions/zarr.json"):
        assert name in objects, name
    assert not any(k.startswith(("inputs/", "run.lock", ".nclsm-sync")) for k in objects)
    assert all(records[("S1", st)].status == "done" for st in STAGES)
    bad = records[("bad", "convert")]
    assert bad.status == "failed" and f"s3://{BUCKET}/archive/bad.ome.tiff: truncated" in bad.error
    assert len(table) > 5 and "curation_class" in table.columns
    assert not any((local / "inputs").iterdir())  # downloads are removed after their conversion
    rec = json.loads(s3.cat(f"{BUCKET}/run/run.json"))
    assert rec["slides"]["S1"]["source"] == f"s3://{BUCKET}/archive/p1/S1.ome.tiff" and rec["ended"]


def test_a_fresh_work_folder_resumes_from_s3_without_recomputing(s3, remote_archive, remote_first, cfg_small,
                                                                   client):
    _, work, local, before, table = remote_first
    shutil.rmtree(local)  # a new pod with an empty disk
    result = run_archive(remote_archive, f"s3://{BUCKET}/run/", cfg_small.model_copy(update={
        "archive": cfg_small.archive.model_copy(update={"work_dir": str(work)})}), client, progress=False)
    assert {s.name: (s.status, s.ran) for s in result.slides} == {"S1": ("done", []), "bad": ("failed", [])}
    assert result.remote == f"s3://{BUCKET}/run" and f"report: s3://{BUCKET}/run/report/index.html" in result.summary()
    state = local / "pulled.sqlite"
    s3.get_file(f"{BUCKET}/run/state.sqlite", str(state))
    after = {(r.slide, r.stage): r for r in StateStore(state).records()}
    for st in STAGES:
        assert (after[("S1", st)].status, after[("S1", st)].started, after[("S1", st)].attempts) == \
            ("done", before[("S1", st)].started, before[("S1", st)].attempts)
    assert after[("bad", "convert")].attempts == before[("bad", "convert")].attempts + 1
    with s3.open(f"{BUCKET}/run/tables/fibres/S1.parquet", "rb") as fh:
        pd.testing.assert_frame_equal(pd.read_parquet(fh), table)
    pd.testing.assert_frame_equal(pd.read_parquet(local / "tables" / "fibres" / "S1.parquet"), table)


@pytest.fixture(scope="module")
def cfg_small():
    """The config ``CLI_SETTINGS`` give."""
    return RunConfig.model_validate({
        "convert": {"chunk_px": 256, "min_level_px": 64},
        "grid": {"block_px": 256},
        "report": {"thumbnail_px": 200},
    })



def _fibre_chunks(s3) -> list[str]:
    return sorted(k for k in _tree(s3, f"{BUCKET}/run") if k.startswith("slides/S1.ome.zarr/labels/fibres/0/c/"))


def test_a_chunk_lost_from_the_remote_run_is_uploaded_again_or_recomputed(s3, remote_archive, remote_first,
                                                                          cfg_small, client):
    """With the work folder intact the final push restores it; from an empty one the stage is redone."""
    _, work, local, _, table = remote_first
    cfg = cfg_small.model_copy(update={"archive": cfg_small.archive.model_copy(update={"work_dir": str(work)})})
    lost = _fibre_chunks(s3)[0]
    s3.rm(f"{BUCKET}/run/{lost}")
    result = run_archive(remote_archive, f"s3://{BUCKET}/run", cfg, client, progress=False)
    assert next(s for s in result.slides if s.name == "S1").ran == [] and lost in _fibre_chunks(s3)
    s3.rm(f"{BUCKET}/run/{lost}")
    shutil.rmtree(local)  # a new pod: the run comes from the bucket, without the lost chunk
    result = run_archive(remote_archive, f"s3://{BUCKET}/run", cfg, client, progress=False)
    s1 = next(s for s in result.slides if s.name == "S1")
    assert s1.ran == ["segment", "measure", "curate"] and any(lost in d for d in s1.damaged)
    assert lost in _fibre_chunks(s3)
    with s3.open(f"{BUCKET}/run/tables/fibres/S1.parquet", "rb") as fh:
        pd.testing.assert_frame_equal(pd.read_parquet(fh), table)
