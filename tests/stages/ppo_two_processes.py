"""Run by test_rlhf_distributed under `accelerate launch --num_processes 2`: each rank trains, then writes
a digest of its policy weights and of the prompts it sampled."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from posttrain.config import RLHFConfig, load_config
from posttrain.stages import rlhf
from posttrain.stages.rlhf import run_rlhf

model, reward_model, prompts, output = sys.argv[1:5]
seen = []
real_encode = rlhf.encode_prompts


def recording_encode(tokenizer, batch, *args, **kwargs):
    seen.append([m[-1]["content"] for m in batch])
    return real_encode(tokenizer, batch, *args, **kwargs)


rlhf.encode_prompts = recording_encode
digest = {}


def on_step(roles, record):
    weights = [p.detach() for n, p in roles.model.named_parameters() if ".policy." in n]
    digest["policy"] = hashlib.sha256(b"".join(w.numpy().tobytes() for w in weights)).hexdigest()


config = load_config(RLHFConfig, None, {
    "model": model, "reward_model": reward_model, "prompts": prompts, "output": output, "rollout.batch_size": 2,
    "rollout.max_new_tokens": 5, "ppo.minibatch_size": 1, "ppo.steps": 2, "ppo.lr": 1e-3, "lora.r": 4})
run_rlhf(config, on_step=on_step)
from accelerate import PartialState

rank = PartialState().process_index
Path(output, f"rank{rank}.json").write_text(json.dumps({**digest, "prompts": seen}))
