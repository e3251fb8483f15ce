"""The SQLite state store and the run lock."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading

import pytest

from nclsm_scale.errors import StageError
from nclsm_scale.state import RunLock, StateStore


def test_stage_lifecycle_and_persistence(tmp_path):
    db = tmp_path / "state.sqlite"
    st = StateStore(db)
    st.register("S1", "/a/S1.tif", ("convert", "segment"), {"subject": "P1"})
    assert [(r.stage, r.status) for r in st.records()] == [("convert", "pending"), ("segment", "pending")]
    st.start("S1", "convert", "fp")
    assert st.get("S1", "convert").status == "running"
    st.finish("S1", "convert", 1.23456)
    st.start("S1", "segment", "fp")
    st.fail("S1", "segment", 0.5, "HaloViolationError: fibre\n  too big")
    again = StateStore(db)  # reopened: everything persisted
    conv, seg = again.get("S1", "convert"), again.get("S1", "segment")
    assert (conv.status, conv.seconds, conv.attempts, conv.fingerprint) == ("done", 1.235, 1, "fp")
    assert conv.finished >= conv.started
    assert (seg.status, seg.error) == ("failed", "HaloViolationError: fibre too big")
    again.register("S1", "/a/S1.tif", ("convert", "segment"))  # registering again keeps the records
    assert again.get("S1", "convert").status == "done"
    again.start("S1", "segment", "fp")
    assert again.get("S1", "segment").attempts == 2 and again.get("S1", "segment").error is None


def test_reset_running_turns_interrupted_stages_pending(tmp_path):
    st = StateStore(tmp_path / "s.sqlite")
    st.register("S", "x", ("convert",))
    st.start("S", "convert", "fp")
    assert st.reset_running() == 1
    assert st.get("S", "convert").status == "pending"


def test_threads_share_a_store(tmp_path):
    st = StateStore(tmp_path / "s.sqlite")
    names = [f"S{i}" for i in range(8)]

    def work(name):
        st.register(name, name, ("convert",))
        st.start(name, "convert", "fp")
        st.finish(name, "convert", 0.1)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((r.slide, r.status) for r in st.records()) == [(n, "done") for n in names]


def test_lock_refuses_a_second_run_while_the_first_is_alive(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(f'{{"pid": {proc.pid}, "host": "{socket.gethostname()}"}}')
        with pytest.raises(StageError, match=f"another run is active \\(pid {proc.pid}"):
            RunLock(tmp_path / "run.lock").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_lock_from_another_host_is_refused(tmp_path):
    (tmp_path / "run.lock").write_text('{"pid": 1, "host": "elsewhere.example"}')
    with pytest.raises(StageError, match="host elsewhere.example"):
        RunLock(tmp_path / "run.lock").acquire()


def test_stale_lock_is_taken_over_with_a_warning_and_released(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a PID that no longer runs
    lock_path = tmp_path / "run.lock"
    lock_path.write_text(f'{{"pid": {proc.pid}, "host": "{socket.gethostname()}"}}')
    with caplog.at_level(logging.WARNING, logger="nclsm_scale.state"), RunLock(lock_path):
        assert f'"pid": {os.getpid()}' in lock_path.read_text()
    assert "stale lock" in caplog.text
    assert not lock_path.exists()
