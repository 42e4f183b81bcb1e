"""How the stages' default settings reach the TRL trainers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posttrain.config import TrainSection
from posttrain.models import cpu_has_fast_bf16
from posttrain.stages.common import trainer_kwargs


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule")
def test_auto_precision_on_a_cpu_trains_under_bf16_autocast_exactly_where_the_cpu_has_native_bf16(tmp_path: Path):
    auto = trainer_kwargs(TrainSection(), tmp_path, has_eval=False)
    # weights stay fp32 (default_dtype), only the forward runs in bf16: TRL's own default on such a CPU
    assert auto["bf16"] is cpu_has_fast_bf16()
    assert auto["fp16"] is False and auto["use_cpu"] is True
    assert trainer_kwargs(TrainSection(precision="fp32"), tmp_path, has_eval=False)["bf16"] is False
    assert trainer_kwargs(TrainSection(precision="bf16"), tmp_path, has_eval=False)["bf16"] is True



def test_help_shows_each_stage_its_own_training_defaults_and_their_rule(capsys):
    from posttrain.cli import print_help
    from posttrain.config import DPOConfig, RewardConfig

    assert RewardConfig().train.lr != TrainSection().lr  # so the first check below tells the two apart
    for command, config in (("rm", RewardConfig()), ("dpo", DPOConfig())):
        print_help(command)
        out = capsys.readouterr().out
        # the stage's own learning rate, not TrainSection's (the SFT default), and the section's doc line
        assert f"--train.lr                       Peak learning rate (AdamW). (default: {config.train.lr!r})" in out
        assert "  train: Optimisation settings; defaults chosen with bench/quality.py" in out
