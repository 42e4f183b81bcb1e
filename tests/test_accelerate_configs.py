"""The shipped accelerate configs (configs/accelerate/*.yaml): each parses with accelerate's own launcher code and
yields the engine it names; FSDP2 runs on the CPU where torch supports it.

What runs on this CPU-only machine, and why the rest is skipped:
- every config is read by `accelerate launch`'s own parser and turned into the environment it gives each process,
  and the engine's plugin is built from that environment, as in a launched process (no GPU needed);
- accelerate 1.15 enables FSDP only for GPU-family backends: launched on a CPU, an FSDP config runs as plain
  data parallel on gloo (test_accelerate_runs_an_fsdp_config_as_ddp_on_a_cpu shows it, so the day accelerate
  shards on CPUs this test says so);
- torch's own FSDP2 (`fully_shard`) does run on gloo: a LoRA model sharded per decoder layer, as the FSDP config
  wraps it, trains to the same weights as one process on the same global batch;
- DeepSpeed needs its CUDA ops: its configs are checked down to the plugin, not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
ENGINES = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "multi_node": "MULTI_GPU"}


def launch_env(name: str) -> tuple[object, dict[str, str]]:
    """(launch arguments, the environment accelerate launch gives each process) for a shipped config."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_every_config_is_shipped_and_parses_to_the_engine_it_names():
    from accelerate.commands.config.config_args import load_config_from_file

    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(ENGINES)
    for name, engine in ENGINES.items():
        config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
        assert config.distributed_type.value == engine, name
        assert config.mixed_precision == "bf16" and not config.use_cpu, name


def test_fsdp_config_is_fsdp2_full_shard_with_the_wrap_lora_needs():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    args, env = launch_env("fsdp")
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()  # built from the environment, as in a launched process
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FSDP2's full shard: parameters freed again after each forward
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy  # one unit per decoder layer
    assert plugin.cpu_ram_efficient_loading  # rank 0 reads the weights; FSDP2 broadcasts them (sync_module_states is FSDP1's)
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # the adapter is saved whole, by the main process


@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_give_their_zero_stage(name, stage):
    from accelerate.utils import DeepSpeedPlugin

    args, env = launch_env(name)
    assert args.use_deepspeed and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    if stage == 3:  # built sharded at load time, and the 16-bit weights gathered to save
        assert plugin.zero3_init_flag and zero["stage3_gather_16bit_weights_on_model_save"]


def test_multi_node_template_marks_the_two_fields_a_user_edits():
    import yaml

    text = (CONFIGS / "multi_node.yaml").read_text()
    edited = [line.split(":")[0] for line in text.splitlines() if "# EDIT" in line and not line.startswith("#")]
    assert edited == ["machine_rank", "main_process_ip"]
    config = yaml.safe_load(text)
    assert config["num_machines"] == 2 and config["num_processes"] % config["num_machines"] == 0
    args, _ = launch_env("multi_node")  # the launcher hands these to torchrun's rendezvous
    assert args.multi_gpu and (args.main_process_ip, args.machine_rank, args.num_machines) == ("10.0.0.1", 0, 2)


def test_accelerate_runs_an_fsdp_config_as_ddp_on_a_cpu(tmp_path):
    """accelerate launch with the FSDP config on this CPU machine: what accelerate makes of it."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, torch\nfrom accelerate import Accelerator\n"
        "acc = Accelerator(cpu=True)\n"
        "model, opt = acc.prepare(torch.nn.Linear(4, 1), torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))\n"
        f"open(os.path.join({str(tmp_path)!r}, f'rank{{acc.process_index}}.json'), 'w').write(json.dumps("
        "{'type': str(acc.distributed_type), 'model': type(model).__name__, 'world': acc.num_processes}))\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", str(probe)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    if ranks[0]["type"] != "DistributedType.FSDP":
        assert ranks[0] == {"type": "DistributedType.MULTI_CPU", "model": "DistributedDataParallel", "world": 2}
        pytest.skip("accelerate 1.15 enables FSDP for GPU backends only: on a CPU the FSDP config ran as data "
                    "parallel on gloo; torch's own FSDP2 on gloo is tested below")


def test_fsdp2_shards_a_lora_model_on_gloo_and_matches_one_process(tiny_model_dir, tmp_path):
    """torch FSDP2 on 2 CPU processes (gloo), each decoder layer its own unit as the FSDP config wraps it, LoRA on
    every linear layer (frozen base weights and trained adapters in one unit): after 3 AdamW steps the adapters
    equal those of one process that ran the same global batch.

    Tolerance: FSDP2 reduce-scatters each gradient as a mean of the 2 halves' gradients, in fp32; the 1-process
    run sums the same rows in another order. fp32 sums agree to ~1e-6 relative; AdamW divides each update by the
    gradient's own running magnitude, so the updates (lr 1e-2, 3 steps) agree to ~1e-6 * 3 * lr in absolute terms:
    atol 1e-6 leaves room for a few rounding steps, and a dropped or doubled half would move weights by ~lr."""
    worker = Path(__file__).with_name("fsdp2_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(worker), str(tiny_model_dir), str(tmp_path / "one.pt")], capture_output=True,
                         text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                          str(worker), str(tiny_model_dir), str(tmp_path / "two.pt")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    import torch

    single, sharded = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert sharded["sharded"] and sharded.keys() == single.keys()
    moved = max((single["weights"][k] - single["initial"][k]).abs().max().item() for k in single["weights"])
    assert moved > 1e-3  # the adapters trained
    for name, value in single["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], value, rtol=0, atol=1e-6, msg=name)
