"""The RL stage's collectives on NCCL, on a machine with one GPU.

NCCL (accelerate's backend on GPUs) reduces only tensors on the GPU; a CPU tensor handed to it raises. With one
process the loop skips its collectives (``Collective`` is the identity), and two processes cannot share one GPU
under NCCL, so this runs the stage as one process under torchrun's NCCL process group with the loop's collectives
forced on: every reduce, gather and flag of the loop then goes through NCCL, as it would on several GPUs.

    torchrun --nproc_per_node 1 scripts/gpu_collectives.py rlhf --model M --reward-model RM --prompts P --output O ...

It first checks that the probe has teeth (a CPU tensor handed to NCCL must raise), then runs the command.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def main(argv: list[str]) -> int:
    from accelerate import PartialState

    state = PartialState()
    if state.backend != "nccl":
        print(f"gpu_collectives: the process group's backend is {state.backend!r}, not NCCL; run under torchrun "
              "on a CUDA machine", file=sys.stderr)
        return 2
    try:
        dist.all_reduce(torch.zeros(1))
    except Exception as error:  # noqa: BLE001 - NCCL's error type differs between torch versions
        print(f"gpu_collectives: a CPU tensor handed to NCCL raises, as expected ({type(error).__name__})")
    else:
        print("gpu_collectives: NCCL accepted a CPU tensor, so this check cannot see the fault", file=sys.stderr)
        return 2

    import posttrain.stages.rlhf_monitor as monitor

    calls = {"n": 0}
    init = monitor.Collective.__init__

    def forced(self, accelerator):
        init(self, accelerator)
        self.world = 2  # take the several-process branch of every collective; NCCL still has one rank
        original = accelerator.reduce, accelerator.gather

        def counted(fn):
            def wrapper(tensor, *args, **kwargs):
                calls["n"] += 1
                return fn(tensor, *args, **kwargs)
            return wrapper

        accelerator.reduce, accelerator.gather = counted(original[0]), counted(original[1])

    monitor.Collective.__init__ = forced
    from posttrain.cli import main as cli

    code = cli(argv)
    print(f"gpu_collectives: the command exited {code} after {calls['n']} collectives on NCCL")
    return code if calls["n"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
