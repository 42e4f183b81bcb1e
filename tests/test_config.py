"""Config loading: defaults, YAML, dotted overrides, errors that name the key and the nearest valid one."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from posttrain.config import ConfigError, SFTConfig, field_docs, load_config, require, save_config, to_dict


def test_every_sft_field_has_a_doc_line():
    rows = field_docs(SFTConfig)
    names = [name for name, _, _ in rows]
    assert {"model", "data", "lora.r", "train.lr", "train.max_steps", "packing", "loss_on"} <= set(names)
    undocumented = [name for name, text, _ in rows if not text.strip()]
    assert undocumented == []


def test_defaults_then_yaml_then_flags(tmp_path):
    config_file = tmp_path / "sft.yaml"
    config_file.write_text("data: a.jsonl\nlora:\n  r: 4\n  alpha: 8\ntrain:\n  lr: 1.0e-3\n  max_steps: 7\n")
    config = load_config(SFTConfig, config_file, {"lora.r": "16", "train.lr": "2e-4", "packing": "true"})
    assert config.data == "a.jsonl"  # from YAML
    assert config.lora.alpha == 8  # from YAML, untouched by flags
    assert config.lora.r == 16 and isinstance(config.lora.r, int)  # the flag wins over YAML, as an int
    assert config.train.lr == pytest.approx(2e-4)
    assert config.train.max_steps == 7
    assert config.packing is True
    assert config.train.batch_size == SFTConfig().train.batch_size  # default kept


def test_short_aliases_and_dashes_reach_their_dotted_home():
    config = load_config(SFTConfig, None, {"max-steps": "3", "lr": "0.01", "max_length": "64", "lora.target-modules": "q_proj"})
    assert (config.train.max_steps, config.train.lr, config.train.max_length) == (3, 0.01, 64)
    assert config.lora.target_modules == "q_proj"


@pytest.mark.parametrize(
    "overrides, named, suggestion",
    [
        ({"lora.rank": "8"}, "lora.rank", "lora.r"),
        ({"train.max_step": "10"}, "train.max_step", "train.max_steps"),
        ({"pakcing": "true"}, "pakcing", "packing"),
    ],
)
def test_unknown_flag_names_the_key_and_the_nearest(overrides, named, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, overrides)
    message = str(err.value)
    assert f"'{named}'" in message
    assert f"Did you mean '{suggestion}'?" in message


def test_unknown_yaml_key_names_file_line_and_nearest(tmp_path):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("data: a.jsonl\nlora:\n  r: 4\ntrian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, config_file)
    message = str(err.value)
    assert str(config_file) in message and "line 4" in message  # 'trian' is on the fourth line
    assert "unknown key 'trian'" in message and "Did you mean 'train.lr'?" in message


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lora.r": "eight"}, "expected a whole number"),
        ({"lora.r": "2.5"}, "expected a whole number"),
        ({"train.lr": "fast"}, "expected a number"),
        ({"packing": "maybe"}, "expected true or false"),
        ({"loss_on": "prompt"}, "is not one of 'assistant', 'all'"),
        ({"lora": "8"}, "'lora' is a section"),
        ({"data.path": "x"}, "'data' has no sub-keys"),
    ],
)
def test_bad_values_name_the_flag(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, overrides)
    assert fragment in str(err.value)
    assert f"--{next(iter(overrides))}" in str(err.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SFTConfig, tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lora: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SFTConfig, broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(SFTConfig, listed)


def test_require_names_the_flag():
    with pytest.raises(ConfigError, match="missing --data"):
        require(SFTConfig(output="out"), "data", "output")


def test_saved_config_loads_back_to_the_same_values(tmp_path):
    config = load_config(SFTConfig, None, {"data": "d.jsonl", "lora.r": "8", "train.lr": "3e-4", "loss_on": "all"})
    save_config(config, tmp_path / "resolved.yaml")
    saved = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert saved == to_dict(config)
    again = load_config(SFTConfig, tmp_path / "resolved.yaml")
    assert dataclasses.asdict(again) == dataclasses.asdict(config)


def _number_fields():
    from posttrain import config as config_module
    from posttrain.chat import ChatConfig
    from posttrain.config import field_ranges
    from posttrain.pipeline_spec import ReportSection

    classes = [ChatConfig, ReportSection] + [c for c in vars(config_module).values()
                                             if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__name__.endswith("Config")]
    for cls in classes:
        ranges = field_ranges(cls)
        for name, _, default in field_docs(cls):
            yield cls, name, default, ranges.get(name)


def test_every_number_setting_has_a_range_that_holds_its_default():
    missing = [f"{cls.__name__}.{name}" for cls, name, default, valid in _number_fields()
               if isinstance(default, (int, float)) and not isinstance(default, bool) and valid is None]
    assert missing == []
    for cls, name, default, valid in _number_fields():
        if valid is not None:
            assert default in valid, (cls.__name__, name, default, str(valid))


def test_ranges_are_checked_for_flags_and_yaml_and_shown_by_help(tmp_path, capsys):
    from posttrain.cli import print_help
    from posttrain.config import RLHFConfig

    with pytest.raises(ConfigError, match=r"^--lr: train.lr: -1.0 is out of range; it must be > 0\.$"):
        load_config(SFTConfig, None, {"lr": "-1"})
    with pytest.raises(ConfigError, match=r"--train.warmup_ratio: train.warmup_ratio: 1.5 is out of range; it must be in \[0, 1\]"):
        load_config(SFTConfig, None, {"train.warmup_ratio": "1.5"})
    with pytest.raises(ConfigError, match=r"--ppo.gamma: ppo.gamma: inf is out of range"):
        load_config(RLHFConfig, None, {"ppo.gamma": "inf"})
    assert load_config(SFTConfig, None, {"max_steps": "-1"}).train.max_steps == -1  # -1: use epochs
    with pytest.raises(ConfigError, match=r"train.max_steps: 0 is out of range; it must be >= 1, or -1"):
        load_config(SFTConfig, None, {"max_steps": "0"})
    config_file = tmp_path / "rlhf.yaml"
    config_file.write_text("ppo:\n  steps: 4\n  minibatch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{config_file}, line 3: ppo.minibatch_size: 0 is out of range; it must be >= 1\.$"):
        load_config(RLHFConfig, config_file)
    print_help("sft")
    printed = capsys.readouterr().out
    assert "(default: 0.0003; > 0)" in printed and "(default: 0.0; in [0, 1))" in printed
