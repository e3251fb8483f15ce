"""The command line as a user meets it: help, version, errors and exit codes."""

from __future__ import annotations

import pytest

import nclsm_scale
from nclsm_scale.cli.app import app, main

COMMANDS = sorted(c.name for c in app.registered_commands)


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert nclsm_scale.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_config_option(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out and "--config" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_lines_name_arguments_in_capitals_without_braces(command, capsys):
    assert main([command, "--help"]) == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith(f"Usage: nclsm-scale {command} [OPTIONS]")
    assert "{" not in usage and usage == usage.replace(usage.split("[OPTIONS]")[1], usage.split("[OPTIONS]")[1].upper())


@pytest.mark.parametrize(("command", "usage"), [
    ("run", "[OPTIONS] ARCHIVE"), ("curate", "[OPTIONS] SLIDE"), ("convert", "[OPTIONS] INPUTS..."),
    ("evaluate", "[OPTIONS] PRED GT"), ("config", "[OPTIONS] [SECTION]"),
])
def test_usage_lines_read_the_click_way(command, usage, capsys):
    assert main([command, "--help"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"Usage: nclsm-scale {command} {usage}"


def test_help_shows_defaults_also_those_from_the_config(capsys):
    assert main(["synth", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: (synth.size_px: 4096x4096)]" in out and "[default: (synth.seed: 0)]" in out
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: (cluster.n_workers: one per core)" in out and "[default: (a local cluster)]" in out
    assert main(["demo", "--help"]) == 0
    assert "[default: demo-run]" in " ".join(capsys.readouterr().out.split())


def test_synth_draws_no_progress_bar_into_redirected_stderr_and_nothing_when_quiet(run_cli, tmp_path):
    proc = run_cli("synth", str(tmp_path / "a.ome.tiff"), "--size", "256x256")
    assert proc.returncode == 0, proc.stderr
    assert "synth:" not in proc.stderr and "\r" not in proc.stderr and "chunk/s" not in proc.stderr
    assert "INFO" in proc.stderr  # the log lines stay
    proc = run_cli("--quiet", "synth", str(tmp_path / "b.ome.tiff"), "--size", "256x256")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_quiet_hides_every_bar_even_on_a_terminal():
    from nclsm_scale.progress import bar_disabled, set_quiet

    assert bar_disabled() is None and bar_disabled(True) is None and bar_disabled(False) is True
    set_quiet(True)
    try:
        assert bar_disabled() is True and bar_disabled(True) is True
    finally:
        set_quiet(False)


def test_bad_config_value_is_one_paragraph_exit_2_without_traceback(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  block_px: -1\n")
    proc = run_cli("config", "--config", str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "grid.block_px" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_cli_value_exit_2(run_cli):
    proc = run_cli("config", "--set", "model.batch_size=zero")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.batch_size" in proc.stderr


def test_unknown_option_is_usage_error(run_cli):
    proc = run_cli("info", "--frobnicate")
    assert proc.returncode == 2 and "No such option" in proc.stderr


def test_info_reports_versions_devices_and_configs(run_cli):
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for needle in ("torch:", "dask:", "zarr:", "device chosen for inference", "CPU inference path", "dask dashboard",
                   "presets:"):
        assert needle in proc.stdout


def test_config_command_prints_resolved_section(run_cli):
    proc = run_cli("config", "grid", "--set", "grid.block_px=512")
    assert proc.returncode == 0, proc.stderr
    assert "block_px: 512" in proc.stdout
