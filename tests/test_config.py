"""Configuration loading: defaults, presets, merging and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nclsm_scale.config import RunConfig, config_dirs, list_presets, load_config, parse_set_option
from nclsm_scale.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_default_yaml_mirrors_model_defaults():
    shipped = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    assert shipped == RunConfig().model_dump(mode="json")


@pytest.mark.parametrize("preset", [p for p in list_presets()])
def test_every_preset_loads(preset):
    cfg = load_config([preset])
    assert isinstance(cfg, RunConfig)


def test_presets_are_found_by_name_and_include_default():
    assert "default" in list_presets()
    assert any((d / "default.yaml").is_file() for d in config_dirs())


def test_later_sources_win_and_cli_overrides_files(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("grid:\n  block_px: 512\n  halo_um: 100\n")
    b = tmp_path / "b.yaml"
    b.write_text("grid:\n  block_px: 256\n")
    cfg = load_config([a, b])
    assert cfg.grid.block_px == 256 and cfg.grid.halo_um == 100
    cfg = load_config([a, b], {"grid.block_px": 2048, "grid.halo_um": None})
    assert cfg.grid.block_px == 2048 and cfg.grid.halo_um == 100


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  blok_px: 512\n")
    with pytest.raises(ConfigError) as info:
        load_config([bad])
    msg = str(info.value)
    assert str(bad) in msg and "grid.blok_px" in msg
    assert "Did you mean 'block_px'" in msg and "halo_um" in msg


def test_a_moved_key_names_its_new_place(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("segment:\n  block_px: 512\n")
    with pytest.raises(ConfigError, match=r"old.yaml.*key 'segment.block_px' has moved: set 'grid.block_px' instead"):
        load_config([old])
    with pytest.raises(ConfigError, match=r"command line.*'segment.retries' has moved: set 'grid.retries'"):
        load_config([], {"segment.retries": 3})


def test_unknown_section_lists_sections(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gird:\n  block_px: 512\n")
    with pytest.raises(ConfigError, match=r"unknown key 'gird'.*Allowed here: .*grid"):
        load_config([bad])


def test_wrong_type_and_impossible_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  block_px: large\n")
    with pytest.raises(ConfigError, match=r"grid.block_px.*integer.*'large'"):
        load_config([bad])
    bad.write_text("grid:\n  block_px: 8\n")
    with pytest.raises(ConfigError, match=r"grid.block_px.*greater than or equal to 64.*8"):
        load_config([bad])


def test_literal_error_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"command line.*cluster.kind.*'local', 'address'"):
        load_config([], {"cluster.kind": "cloud"})


def test_cross_field_rule_is_reported():
    with pytest.raises(ConfigError, match="cluster.address"):
        load_config([], {"cluster.kind": "address"})


def test_bad_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([bad])


def test_missing_file_lists_presets():
    with pytest.raises(ConfigError, match=r"config file not found: nope.*default"):
        load_config(["nope"])


def test_parse_set_option():
    assert parse_set_option("model.device=cpu") == ("model.device", "cpu")
    assert parse_set_option("grid.halo_um=12.5") == ("grid.halo_um", 12.5)
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_set_option("nonsense")
    for empty in ("grid.block_px=", "grid.block_px=  "):  # an empty value is not the default
        with pytest.raises(ConfigError, match="no value given for 'grid.block_px'"):
            parse_set_option(empty)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
def test_infinite_and_nan_values_are_refused_in_files_and_on_the_command_line(tmp_path, value):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"segment:\n  target_pixel_size_um: {value}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid configuration: key 'segment.target_pixel_size_um': "
                                          r"Input should be a finite number"):
        load_config([bad])
    with pytest.raises(ConfigError, match=r"command line: .*'grid.halo_um': Input should be a finite number"):
        load_config([], dict([parse_set_option(f"grid.halo_um={value}")]))


def test_cpu_inference_starts_no_gpu_workers():
    assert RunConfig.model_validate({"model": {"device": "cpu"}}).cluster.local_gpus == 0
    assert RunConfig.model_validate({"model": {"device": "cpu"}, "cluster": {"local_gpus": 1}}).cluster.local_gpus == 1
    assert RunConfig().cluster.local_gpus is None


def test_the_fast_convert_preset_changes_only_the_compression_level():
    fast, default = load_config(["fast-convert"]), RunConfig()
    assert fast.convert.compression_level == 1 < default.convert.compression_level
    assert fast.model_copy(update={"convert": default.convert}) == default
