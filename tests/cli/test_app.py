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
