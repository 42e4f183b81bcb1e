"""How the stages' default settings reach the TRL trainers."""

from __future__ import annotations

from posttrain.config import TrainSection


def test_help_shows_each_stage_its_own_training_defaults_and_their_rule(capsys):
    from posttrain.cli import print_help
    from posttrain.config import DPOConfig, RewardConfig

    assert RewardConfig().train.lr != TrainSection().lr  # so the first check below tells the two apart
    for command, config in (("rm", RewardConfig()), ("dpo", DPOConfig())):
        print_help(command)
        out = capsys.readouterr().out
        # the stage's own learning rate, not TrainSection's (the SFT default), and the section's doc line
        assert f"--train.lr                       Peak learning rate (AdamW). (default: {config.train.lr!r}; > 0)" in out
        assert "  train: Optimisation settings; defaults chosen with bench/quality.py" in out
