"""What running a group's prompt once saves (generation.SharedPrompts): the RL stage's passes over a GRPO minibatch
and its rollout, with the prompt shared and with every row running its whole sequence, interleaved in one process.

    python bench/shared_prompts.py                   # the default model, 2 math prompts x 4 responses of 32 tokens
    python bench/shared_prompts.py --cpu avx2        # oneDNN/ATen limited to AVX2: the fp32 base
    python bench/shared_prompts.py --group-size 8 --response-length 64

Three calls, each timed --repeats times per setting, alternating (the first of each is warm-up): a training
pass (forward and backward of the policy over one minibatch, one group of --group-size rows), a scoring pass
(the same forward without a graph) and a rollout of the whole batch (--prompts prompts x --group-size responses of at
most --response-length tokens, drawn with the same numbers in both settings, so the same responses). The passes'
responses are random tokens of the full length: their cost depends on the length only. Writes bench/results/shared_prompts[_avx2][-TAG].json and prints the medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts-file", default=str(REPO / "data_samples" / "math.jsonl"))
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", choices=["native", "avx2"], default="native")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    from ppo_vs_trl import AVX2_ENV, cpu_description

    if args.cpu == "avx2":
        os.environ.update(AVX2_ENV)  # before torch loads
    import torch

    import posttrain.generation as generation
    from posttrain.config import RLHFConfig, load_config
    from posttrain.data import load_prompts
    from posttrain.stages import rlhf_roles
    from posttrain.stages.rlhf_roles import load_roles
    from posttrain.stages.rlhf_steps import encode_prompts
    from posttrain.stages.rollout import Rollout

    torch.set_num_threads(args.threads)
    config = load_config(RLHFConfig, None, {"model": args.model, "prompts": args.prompts_file, "algo": "grpo",
                                            "reward_fn": "posttrain.rewards:answer_format"})
    roles = load_roles(config, torch.device("cpu"), critic=False)
    k, length = args.group_size, args.response_length
    rows = [row for row in load_prompts(config.prompts).rows[:args.prompts] for _ in range(k)]
    query, query_mask, _ = encode_prompts(roles.tokenizer, [r["prompt"] for r in rows], config.rollout.max_prompt_length,
                                          roles.device)
    response = torch.randint(10, len(roles.tokenizer) - 10, (len(rows), length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(response, dtype=torch.bool)
    rollout = Rollout(query, query_mask, response, mask, mask.sum(1), torch.ones(len(rows), dtype=torch.bool),
                      torch.zeros(response.shape), rows, k)
    group = rollout.rows(torch.arange(k))
    found = generation.shared_prompts

    def share(on: bool) -> None:
        roles.share_prompts = on  # the RL passes
        generation.shared_prompts = found if on else (lambda *a, **kw: None)  # the rollout's prefill

    def train() -> None:
        logprobs, _, _ = roles.forward(group, 1.0, with_entropy=False)
        logprobs.sum().backward()
        roles.model.zero_grad(set_to_none=True)

    def score() -> None:
        with torch.no_grad():
            roles.forward(group, 1.0, with_entropy=False)

    uniforms = torch.rand(len(rows), length, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    drawn: dict[bool, list[int]] = {True: [], False: []}

    def sample() -> None:
        responses, _ = roles.rollout(query, query_mask, length, config.rollout.temperature, uniforms)
        drawn[roles.share_prompts].append(responses.shape[1])

    calls = {f"training pass ({k} rows)": train, f"scoring pass ({k} rows)": score,
             f"rollout ({len(rows)} rows x {length} tokens)": sample}
    results = {}
    for name, call in calls.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for on in (True, False):
                share(on)
                started = time.perf_counter()
                call()
                times[on].append(time.perf_counter() - started)
        shared, whole = (statistics.median(times[on][1:]) for on in (True, False))
        results[name] = {"shared_seconds": round(shared, 4), "whole_rows_seconds": round(whole, 4),
                         "ratio": round(shared / whole, 3), "runs": {"shared": times[True], "whole_rows": times[False]}}
        print(f"{name:34s} shared {shared:7.3f} s   whole rows {whole:7.3f} s   ratio {shared / whole:.2f}", flush=True)
    share(True)
    results["rollout_response_columns"] = {"shared": drawn[True], "whole_rows": drawn[False]}
    prompt_tokens = int(query_mask[0].sum())
    out = {"date": date.today().isoformat(), "cpu": cpu_description(), "base_dtype": str(roles.dtype),
           "settings": {**vars(args), "prompt_columns": query.shape[1], "first_prompt_tokens": prompt_tokens},
           "results": results}
    name = "shared_prompts" + ("_avx2" if args.cpu == "avx2" else "") + (f"-{args.tag}" if args.tag else "")
    (HERE / "results" / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to bench/results/{name}.json")


if __name__ == "__main__":
    main()
