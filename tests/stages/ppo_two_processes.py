"""Run by the 2-process tests under `accelerate launch --num_processes 2`: each rank trains, then writes a digest
of its policy weights, the prompts it sampled (grouped as encoded) and, if the run stopped, its error message.

    ppo_two_processes.py MODEL REWARD_MODEL PROMPTS OUTPUT [ppo|grpo|nan|global]

"nan": rank 1's reward model returns NaN at the first step, and every rank must stop with the message.
"global": one minibatch per process and epoch (the settings `GLOBAL_BATCH` of the test's 1-process run, halved).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from posttrain.config import RLHFConfig, load_config
from posttrain.stages import rlhf_steps
from posttrain.stages.common import StageError
from posttrain.stages.rlhf import run_rlhf

model, reward_model, prompts, output = sys.argv[1:5]
mode = sys.argv[5] if len(sys.argv) > 5 else "ppo"
rank = int(os.environ["RANK"])  # (a PartialState made here, before the stage's Accelerator, would change its state)
seen = []
real_encode = rlhf_steps.encode_prompts


def recording_encode(tokenizer, batch, *args, **kwargs):
    seen.append([m[-1]["content"] for m in batch])
    return real_encode(tokenizer, batch, *args, **kwargs)


rlhf_steps.encode_prompts = recording_encode
if mode == "nan" and rank == 1:
    from posttrain.stages import rlhf_rewards

    real_call = rlhf_rewards.RewardModelSource.__call__
    rlhf_rewards.RewardModelSource.__call__ = lambda self, batch: real_call(self, batch) * float("nan")
digest = {}


def on_step(roles, record):
    weights = [p.detach() for n, p in roles.model.named_parameters() if ".policy." in n]
    digest["policy"] = hashlib.sha256(b"".join(w.numpy().tobytes() for w in weights)).hexdigest()


settings = {"model": model, "reward_model": reward_model, "prompts": prompts, "output": output, "rollout.batch_size": 2,
            "rollout.max_new_tokens": 5, "ppo.minibatch_size": 1, "ppo.steps": 2, "ppo.lr": 1e-3, "lora.r": 4}
if mode == "grpo":
    settings.update({"algo": "grpo", "rollout.batch_size": 6, "rollout.group_size": 3, "ppo.minibatch_size": 3})
if mode == "nan":  # the NaN stays on rank 1 (reward normalisation's global moments would spread it to rank 0)
    settings["ppo.normalize_rewards"] = False
if mode == "global":
    settings.update({"rollout.batch_size": 2, "ppo.minibatch_size": 2, "ppo.epochs": 1, "rollout.max_new_tokens": 4,
                     "lora.alpha": 8, "ppo.save_steps": 0, "precision": "fp32"})
error = None
try:
    run_rlhf(load_config(RLHFConfig, None, settings), on_step=on_step)
except StageError as err:
    error = str(err)
Path(output).mkdir(parents=True, exist_ok=True)
Path(output, f"rank{rank}.json").write_text(json.dumps({**digest, "prompts": seen, "error": error}))
