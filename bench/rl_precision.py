"""Measure what the RL stage's bf16 shortcuts do to its numbers, on the default model.

    python bench/rl_precision.py                 # 6 PPO steps, 8 prompts, lr 2e-4 (so the policy moves)

Two risks, each measured at every step of a real run (base in bf16, as on this CPU):
1. The fold: rollouts sample from W + s*BA rounded to bf16, training log-probs use the unfolded adapter. The stage
   logs the gap itself (``rollout_logprob_gap``: mean |sampling log-prob - training log-prob| of the sampled
   tokens); this script reports it next to the others.
2. bf16 logits: the vocabulary projection runs in bf16 and is cast afterwards. Here the same hidden states are
   also projected in fp32, and the script reports the per-token log-prob difference, its effect on each
   response's KL estimate (k1, summed over the response), and on the PPO ratio after the step's update
   (ratio from bf16 logits against ratio from fp32 logits, and how often the two disagree about clipping).
Writes bench/results/rl_precision.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def logprobs_both(roles, role, batch, temperature):
    """Response log-probs of ``role`` on a minibatch view from bf16 logits (the stage's path) and from fp32 logits."""
    from posttrain.rl import logprobs_from_logits

    with torch.no_grad():
        (hidden,) = roles.hidden([role], batch.ids, batch.attn)
        bf16 = roles.logprobs(role, hidden, batch.ids, batch.context, temperature)
        h = hidden[:, batch.context - 1:-1].float()
        weight = roles.model.get_base_model().get_output_embeddings().weight.float()
        fp32 = logprobs_from_logits(torch.nn.functional.linear(h, weight) / temperature, batch.ids[:, batch.context:])
    return bf16, fp32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    args = parser.parse_args()

    from posttrain.config import RLHFConfig, load_config
    from posttrain.rl import masked_mean
    from posttrain.stages import rlhf
    from posttrain.stages.rlhf_roles import POLICY

    config = load_config(RLHFConfig, None, {
        "prompts": str(REPO / "data_samples/math.jsonl"), "reward_fn": "posttrain.rewards:answer_format",
        "output": tempfile.mkdtemp(), "ppo.steps": args.steps, "ppo.lr": args.lr, "ppo.save_steps": 0,
        "rollout.batch_size": args.batch_size, "rollout.max_new_tokens": 32})
    kept = {}
    collect = rlhf.collect_rollouts

    def recording_collect(roles, *a, **k):
        rollout, cut = collect(roles, *a, **k)
        view = rollout.rows(torch.arange(len(rollout)))
        kept.update(rollout=rollout, view=view, old=logprobs_both(roles, POLICY, view, config.rollout.temperature),
                    ref=logprobs_both(roles, roles.reference_adapter, view, config.rollout.temperature))
        return rollout, cut

    rlhf.collect_rollouts = recording_collect
    steps = []

    def on_step(roles, record):
        view, mask = kept["view"], kept["view"].mask
        (old16, old32), (ref16, ref32) = kept["old"], kept["ref"]
        new16, new32 = logprobs_both(roles, POLICY, view, config.rollout.temperature)
        diff = (new16 - new32).abs()[mask]
        kl16, kl32 = ((old16 - ref16) * mask).sum(1), ((old32 - ref32) * mask).sum(1)
        r16, r32 = torch.exp(new16 - old16), torch.exp(new32 - old32)
        eps = config.ppo.clip_eps
        clipped16, clipped32 = (r16 - 1).abs() > eps, (r32 - 1).abs() > eps
        steps.append({
            "step": record["step"], "rollout_logprob_gap": record["rollout_logprob_gap"],
            "logit_logprob_abs_diff_mean": diff.mean().item(), "logit_logprob_abs_diff_max": diff.max().item(),
            "kl_bf16": kl16.mean().item(), "kl_fp32": kl32.mean().item(),
            "kl_abs_diff_per_response": (kl16 - kl32).abs().mean().item(),
            "ratio_abs_diff_mean": (r16 - r32).abs()[mask].mean().item(),
            "clip_frac_bf16": masked_mean(clipped16.float(), mask).item(), "clip_frac_fp32": masked_mean(clipped32.float(), mask).item(),
            "clip_disagreement": masked_mean((clipped16 != clipped32).float(), mask).item(),
            "approx_kl": record["approx_kl"],
        })
        print(json.dumps(steps[-1]), flush=True)

    rlhf.run_rlhf(config, on_step=on_step)
    keys = [k for k in steps[0] if k != "step"]
    summary = {k: statistics.mean(s[k] for s in steps) for k in keys}
    out = HERE / "results" / "rl_precision.json"
    out.write_text(json.dumps({"settings": vars(args), "mean": summary, "steps": steps}, indent=2) + "\n")
    for k, v in summary.items():
        print(f"{k:>32}: {v:.6f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
