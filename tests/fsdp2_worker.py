"""Run by test_accelerate_configs.py: 3 AdamW steps of LoRA on a tiny model, on one process or, under torchrun,
sharded by torch FSDP2 (`fully_shard`, each decoder layer its own unit, then the root) on gloo. Saves the adapters'
full weights (gathered from the shards) and their initial values.

    fsdp2_worker.py MODEL OUTPUT.pt
"""

import os
import sys

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_dir, output = sys.argv[1:3]
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                       LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
for name, param in model.named_parameters():  # LoRA B starts at 0: give it values so every gradient flows at step 1
    if "lora_B" in name:
        torch.nn.init.normal_(param, std=0.02)
initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
if world > 1:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.get_base_model().model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
data = torch.randint(0, model.config.vocab_size, (3, 4, 12), generator=torch.Generator().manual_seed(1))
for batch in data:  # the global batch: 4 rows of 12 tokens; each of 2 processes takes 2 rows
    rows = batch.chunk(world)[rank]
    loss = model(input_ids=rows, labels=rows).loss  # equal token counts per row: the mean of halves is the mean
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def full(param):
    return param.full_tensor() if hasattr(param, "full_tensor") else param


weights = {n: full(p).detach().clone() for n, p in model.named_parameters() if p.requires_grad}
sharded = any(hasattr(p, "full_tensor") for p in model.parameters())
if rank == 0:
    torch.save({"weights": weights, "initial": initial, "sharded": sharded}, output)
if world > 1:
    dist.destroy_process_group()
