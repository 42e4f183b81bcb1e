"""bench/ppo_vs_trl.py: a --variant may change posttrain's own settings, never what every implementation shares."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ppo_vs_trl  # noqa: E402

FLAGS = dict(model="smollm2-135m-instruct", reward_model="", prompts_file="", batch_size=8, response_length=32,
             minibatches=2, epochs=2, steps=4, lora_r=16)


def test_a_variant_of_posttrains_own_settings_is_taken():
    ppo_vs_trl.check_variants(SimpleNamespace(variant=["shared:ppo.critic=shared,ppo.vf_coef=0.2"], **FLAGS))


@pytest.mark.parametrize("variant, named", [("long:rollout.max-new-tokens=64", "rollout.max_new_tokens"),
                                            ("hot:temperature=0.9", "rollout.temperature"),
                                            ("more:ppo.epochs=4", "ppo.epochs")])
def test_a_variant_that_changes_a_shared_setting_is_refused_under_any_spelling(variant, named):
    with pytest.raises(SystemExit, match=f"changes {named}, which the benchmark sets for every implementation"):
        ppo_vs_trl.check_variants(SimpleNamespace(variant=[variant], **FLAGS))


def test_a_malformed_variant_says_how_to_write_one():
    with pytest.raises(SystemExit, match="write NAME:KEY=VALUE"):
        ppo_vs_trl.check_variants(SimpleNamespace(variant=["shared"], **FLAGS))
