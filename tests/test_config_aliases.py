"""Names users bring from Hugging Face TrainingArguments and TRL's configs: aliases of posttrain's keys, the
"did you mean" hint for a misspelt one, and train.extra passed through to the stage's TRL config."""

from __future__ import annotations

import re

import pytest

from posttrain.config import ConfigError, DPOConfig, RewardConfig, RLHFConfig, SFTConfig, load_config
from posttrain.config_aliases import aliases


def test_trainer_names_in_yaml_and_flags_reach_posttrains_keys(tmp_path):
    config_file = tmp_path / "trl.yaml"
    config_file.write_text(
        "model_name_or_path: my-model\ndataset_name: rows.jsonl\noutput_dir: runs/x\nlearning_rate: 1.0e-4\n"
        "num_train_epochs: 3\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 8\nwarmup_ratio: 0.1\n"
        "bf16: true\nlora_r: 8\nlora_alpha: 16\nlora_target_modules: [q_proj, v_proj]\nassistant_only_loss: false\n"
    )
    config = load_config(SFTConfig, config_file, {"max_length": "256", "lora_dropout": "0.0"})
    assert (config.model, config.data, config.output) == ("my-model", "rows.jsonl", "runs/x")
    train = config.train
    assert (train.lr, train.epochs, train.batch_size, train.grad_accum, train.warmup_ratio) == (1e-4, 3.0, 2, 8, 0.1)
    assert (train.precision, train.max_length) == ("bf16", 256)
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (8, 16, 0.0)
    assert config.lora.target_modules == "q_proj,v_proj"
    assert config.loss_on == "all"  # assistant_only_loss: false trains on the whole sequence


def test_each_stage_maps_the_names_to_its_own_keys():
    dpo = load_config(DPOConfig, None, {"learning_rate": "5e-6", "beta": "0.3", "per_device_train_batch_size": "1"})
    assert (dpo.train.lr, dpo.beta, dpo.train.batch_size) == (5e-6, 0.3, 1)
    rm = load_config(RewardConfig, None, {"num_train_epochs": "2", "lora_r": "4"})
    assert (rm.train.epochs, rm.lora.r) == (2.0, 4)
    # the RL stage has no train section: the same names land in ppo and rollout, GRPO's beta is the KL coefficient
    rl = load_config(RLHFConfig, None, {"learning_rate": "1e-5", "beta": "0.02", "num_generations": "4",
                                        "max_completion_length": "32", "per_device_train_batch_size": "8"})
    assert (rl.ppo.lr, rl.ppo.kl_coef, rl.rollout.group_size) == (1e-5, 0.02, 4)
    assert (rl.rollout.max_new_tokens, rl.rollout.batch_size) == (32, 8)


def test_an_alias_whose_value_cannot_carry_over_says_what_to_pass(tmp_path):
    config_file = tmp_path / "trl.yaml"
    config_file.write_text("learning_rate: 1.0e-4\nwarmup_steps: 100\n")
    with pytest.raises(ConfigError, match=r"line 2: warmup_steps 100: .*--train.warmup_ratio"):
        load_config(SFTConfig, config_file)
    assert load_config(SFTConfig, None, {"warmup_steps": "0.05"}).train.warmup_ratio == 0.05
    with pytest.raises(ConfigError, match=r"--num_train_epochs: .*--ppo.steps"):
        load_config(RLHFConfig, None, {"num_train_epochs": "1"})


@pytest.mark.parametrize("cls", [SFTConfig, DPOConfig, RewardConfig, RLHFConfig])
def test_a_misspelt_alias_is_answered_with_the_key_it_stands_for(cls):
    wrong = []
    for name, alias in aliases(cls).items():
        typo = name[:-1]  # the last letter dropped: learning_rat, per_device_train_batch_siz, lora_
        with pytest.raises(ConfigError) as err:
            load_config(cls, None, {typo: "1"})
        hint = re.search(r"Did you mean '([^']+)'\?", str(err.value))
        if hint is None or hint.group(1) != alias.key:
            wrong.append((typo, hint and hint.group(1), alias.key))
    assert wrong == []


def test_hints_name_posttrains_key_not_a_lookalike():
    # before the alias table joined the hint, --learning_rat suggested train.logging_steps
    with pytest.raises(ConfigError, match=r"Did you mean 'train.lr'\?"):
        load_config(SFTConfig, None, {"learning_rat": "1e-4"})
    with pytest.raises(ConfigError, match=r"Did you mean 'train.grad_accum'\?"):
        load_config(DPOConfig, None, {"gradient_accumulation": "4"})


# ---------------------------------------------------------------------------------------------
# train.extra: the rest of the TRL config, passed through and checked
# ---------------------------------------------------------------------------------------------


def test_extra_fields_reach_the_trl_config(tmp_path):
    import trl

    from posttrain.stages.trl_args import trl_config

    config_file = tmp_path / "sft.yaml"
    config_file.write_text("output: runs/x\ntrain:\n  extra:\n    optim: sgd\n    lr_scheduler_kwargs:\n      min_lr: 1.0e-6\n")
    # a TRL field at the top level, or dotted under train.extra on the command line, goes there too
    config = load_config(SFTConfig, config_file, {"adam_beta2": "0.95", "train.extra.save_total_limit": "5"})
    assert config.train.extra == {"optim": "sgd", "lr_scheduler_kwargs": {"min_lr": 1e-6}, "adam_beta2": "0.95",
                                  "save_total_limit": "5"}
    args = trl_config(trl.SFTConfig, config, has_eval=False)
    assert args.optim == "sgd" and args.lr_scheduler_kwargs == {"min_lr": 1e-6}
    assert args.adam_beta2 == 0.95 and args.save_total_limit == 5  # typed as TRL's fields are

    config = load_config(DPOConfig, None, {"output": "runs/d", "train.extra.lr_scheduler_kwargs.min_lr": "1e-6",
                                           "ld_alpha": "0.5"})
    args = trl_config(trl.DPOConfig, config, has_eval=False, beta=config.beta)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-6}  # text from the command line, read as the number it is
    assert args.ld_alpha == 0.5


@pytest.mark.parametrize(
    "cls, trl_name, extra, fragment",
    [
        (SFTConfig, "SFTConfig", {"optimm": "sgd"}, "TRL's SFTConfig has no field 'optimm'. Did you mean 'optim'?"),
        (RewardConfig, "RewardConfig", {"center_reward_coefficient": "0.01"},
         "no field 'center_reward_coefficient'. Did you mean 'center_rewards_coefficient'?"),
        (SFTConfig, "SFTConfig", {"output_dir": "elsewhere"}, "posttrain sets output_dir itself; use --output"),
        (SFTConfig, "SFTConfig", {"learning_rate": "1"}, "posttrain sets learning_rate itself; use --train.lr"),
        (SFTConfig, "SFTConfig", {"save_steps": "1"}, "posttrain sets save_steps itself; use --train.save_steps"),
        (SFTConfig, "SFTConfig", {"adam_beta2": "high"}, "train.extra.adam_beta2: 'high' is not a float"),
    ],
)
def test_extra_fields_trl_lacks_or_posttrain_sets_are_refused(cls, trl_name, extra, fragment):
    import trl

    from posttrain.stages.trl_args import trl_config

    config = load_config(cls, None, {"output": "runs/x", **{f"train.extra.{k}": v for k, v in extra.items()}})
    with pytest.raises(ConfigError) as err:
        trl_config(getattr(trl, trl_name), config, has_eval=False)
    assert fragment in str(err.value)


def test_a_stage_setting_in_extra_is_refused_with_its_flag():
    import trl

    from posttrain.stages.trl_args import trl_config

    config = load_config(SFTConfig, None, {"output": "runs/x", "train.extra.packing": "true"})
    with pytest.raises(ConfigError, match="posttrain sets packing itself; use --packing"):
        trl_config(trl.SFTConfig, config, has_eval=False, packing=config.packing)


def test_a_misspelt_extra_field_fails_before_the_data_is_read(tmp_path, capsys):
    from posttrain.cli import main

    code = main(["sft", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out"),
                 "--train.extra.optimm", "sgd"])
    error = capsys.readouterr().err
    assert code == 2 and "no field 'optimm'. Did you mean 'optim'?" in error and "missing.jsonl" not in error


def test_a_setting_posttrain_cannot_place_in_trls_config_is_an_error(monkeypatch):
    """trl_config used to filter away the settings a TRL config lacked; a renamed TRL field must fail instead."""
    import trl

    from posttrain.stages import trl_args

    real = trl_args.trainer_kwargs
    monkeypatch.setattr(trl_args, "trainer_kwargs", lambda *a, **k: {**real(*a, **k), "evaluation_strategy": "no"})
    config = load_config(SFTConfig, None, {"output": "runs/x"})
    with pytest.raises(ConfigError, match="has no field evaluation_strategy, which posttrain sets"):
        trl_args.trl_config(trl.SFTConfig, config, has_eval=False)
