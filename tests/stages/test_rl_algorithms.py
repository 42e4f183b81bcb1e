"""The critic-free algorithms and reward functions on tiny models: no critic is built, groups stay together, reward
functions get the prompt rows' fields as TRL passes them, bad reward functions give one clear error, held-out
evaluation and early stops, exact resume for GRPO, and the shipped math task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from posttrain.rewards import RewardFunctionError
from test_rlhf import adapter_state, ppo_config, prompts_file, tiny_rm  # noqa: F401 (the fixtures, shared with test_rlhf)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sums_file(tmp_path_factory):
    """Prompts with an ``answer`` column, as a verifiable-reward task has."""
    path = tmp_path_factory.mktemp("sums") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {n} plus 1?"}], "answer": n + 1}) + "\n"
                            for n in range(8)))
    return path


def write_reward_file(folder: Path, body: str) -> Path:
    path = folder / "my_rewards.py"
    path.write_text(body)
    return path


RECORDING_REWARD = '''
import json, pathlib, re
LOG = pathlib.Path(__file__).with_name("calls.jsonl")

def reward(prompts, completions, answer, completion_ids, trainer_state, **kwargs):
    with LOG.open("a") as f:
        f.write(json.dumps({"prompts": [p[-1]["content"] for p in prompts], "answer": answer,
                            "completions": completions, "ids": completion_ids, "step": trainer_state.global_step,
                            "extra": sorted(kwargs)}) + "\\n")
    return [float(len(c[0]["content"]) % 3) for c in completions]
'''


@pytest.mark.parametrize("algo", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_algorithms_build_no_critic_and_keep_groups_together(tiny_model_dir, tiny_rm, sums_file, tmp_path,
                                                                         algo, monkeypatch):
    from posttrain.stages import rlhf
    from posttrain.stages.rlhf import run_rlhf

    rollouts, seen = [], []
    collect = rlhf.collect_rollouts
    monkeypatch.setattr(rlhf, "collect_rollouts", lambda *a, **k: rollouts.append(collect(*a, **k)) or rollouts[-1])

    def on_step(roles, record):
        seen.append((roles.has_critic, roles.value_head, [n for n, _ in roles.model.named_parameters() if ".critic." in n],
                     adapter_state(roles, "policy"), record))

    group = 1 if algo == "reinforce_pp" else 3
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, sums_file, tmp_path / algo, algo=algo, **{
        "rollout.batch_size": 2 * group, "rollout.group_size": group, "ppo.minibatch_size": 2 if group == 1 else 3,
        "rollout.penalise_no_eos": False}), on_step=on_step)  # every tiny-model response runs to the limit: -1 for all
    for has_critic, value_head, critic_params, _, record in seen:
        assert (has_critic, value_head, critic_params) == (False, None, [])
        assert "value_loss" not in record and "explained_variance" not in record
    before, after = seen[0][3], seen[1][3]
    assert any(not torch.equal(before[k], after[k]) for k in before), "the policy did not train"
    assert not (tmp_path / algo / "critic").exists()
    for rollout, _ in rollouts:
        prompts = [row["prompt"][-1]["content"] for row in rollout.prompts]
        assert len(prompts) == 2 * group
        groups = [prompts[i:i + group] for i in range(0, len(prompts), group)]
        assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 2


def test_reward_functions_get_the_prompt_rows_fields_as_trl_passes_them(tiny_model_dir, sums_file, tmp_path):
    """A TRL-style function (keyword arguments, **kwargs) is called with the prompts, the completions as messages
    (the prompts are conversational), their token ids, the trainer state and the rows' own columns, row-aligned;
    no reward model is needed, and PPO's critic starts fresh."""
    from posttrain.stages.rlhf import run_rlhf

    path = write_reward_file(tmp_path, RECORDING_REWARD)
    records = []
    run_rlhf(ppo_config(tiny_model_dir, "", sums_file, tmp_path / "out", reward_fn=f"{path}:reward"),
             on_step=lambda roles, record: records.append(record))
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["step"] for c in calls] == [1, 2]
    for call in calls:
        for prompt, answer in zip(call["prompts"], call["answer"]):
            assert prompt == f"What is {answer - 1} plus 1?"  # each response's own row
        assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in call["completions"])
        assert all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in call["ids"])
    assert "reward/reward" in records[0] and "reward/reward_model" not in records[0]
    expected = [float(len(c[0]["content"]) % 3) for c in calls[0]["completions"]]
    assert records[0]["reward/reward"] == pytest.approx(sum(expected) / len(expected))


@pytest.mark.parametrize("spec_body,expected", [
    ("nosuchmodule_7f3a:reward", "cannot import module 'nosuchmodule_7f3a'"),
    ("FILE:missing", "has no function 'missing'"),
    ("missing_file.py:reward", "no such file"),
    ("FILE:no_completions", "does not take `completions`"),
    ("FILE:needs_column", "needs 'difficulty', which the rows of"),
    ("BROKEN:reward", "importing"),
    ("FILE:reward,FILE:reward|2,1,3", "3 weights for 2 reward sources"),
])
def test_bad_reward_functions_are_refused_before_any_model_loads(tmp_path, sums_file, capsys, spec_body, expected):
    from posttrain.cli import main

    good = write_reward_file(tmp_path, "def reward(completions, **kw):\n    return [1.0] * len(completions)\n"
                                       "def no_completions(prompts):\n    return []\n"
                                       "def needs_column(completions, difficulty, **kw):\n    return [0.0] * len(completions)\n")
    broken = tmp_path / "broken.py"
    broken.write_text("import nosuchpackage_7f3a\n")
    spec, _, weights = spec_body.partition("|")
    spec = spec.replace("FILE", str(good)).replace("BROKEN", str(broken))
    argv = ["rlhf", "--model", "no-model-is-loaded", "--prompts", str(sums_file), "--output", str(tmp_path / "o"),
            "--reward-fn", spec] + (["--reward-weights", weights] if weights else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("posttrain: error") == 1


@pytest.mark.parametrize("body,expected", [
    ("def reward(completions, **kw):\n    return [float('nan')] * len(completions)\n", "must be a finite number"),
    ("def reward(completions, **kw):\n    return [1.0]\n", "returned 1 values for"),
    ("def reward(completions, **kw):\n    return 'good'\n", "returned str"),
    ("def reward(prompts, completions, answer, **kw):\n    return [1.0 / (a - 4) for a in answer]\n", "ZeroDivisionError"),
])
def test_a_reward_function_that_fails_mid_run_stops_with_its_prompt_and_response(tiny_model_dir, sums_file, tmp_path,
                                                                                   body, expected):
    from posttrain.stages.rlhf import run_rlhf

    path = write_reward_file(tmp_path, body)
    config = ppo_config(tiny_model_dir, "", sums_file, tmp_path / "out", reward_fn=f"{path}:reward", algo="grpo",
                        **{"rollout.batch_size": 16, "rollout.group_size": 2, "ppo.minibatch_size": 4})
    with pytest.raises(RewardFunctionError, match=expected) as raised:
        run_rlhf(config)
    if "answer" in body:  # the function fails on one row only: the message names it
        assert "prompt: 'What is 3 plus 1?'" in str(raised.value) and "response:" in str(raised.value)
    elif "nan" in body:
        assert "prompt: 'What is" in str(raised.value)


def test_held_out_evaluation_keeps_the_best_policy_and_an_early_stop_ends_the_run(tiny_model_dir, tiny_rm, prompts_file,
                                                                                   tmp_path):
    from posttrain.models import is_adapter_folder, read_metadata
    from posttrain.stages.rlhf import run_rlhf

    records = []
    out = run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "out", **{
        "ppo.steps": 4, "eval.share": 0.25, "eval.every": 1, "stop.kl_above": 1e-9, "ppo.kl_estimator": "k3"}),
        on_step=lambda roles, record: records.append(record))
    # step 1: KL is exactly 0 (policy = reference); step 2 has moved, and k3 (never negative, unlike k1) is past the
    # tiny threshold: the run ends there
    assert [r["step"] for r in records] == [1, 2]
    assert all("eval_reward" in r and "eval_reward_model" in r for r in records)
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert "KL to the reference" in final["stopped_early"]
    best = read_metadata(out / "best")  # the starting policy (step 0) is evaluated too
    assert is_adapter_folder(out / "best") and best["best_step"] in (0, 1, 2)
    assert best["eval_reward"] == max([final["eval_reward_start"]] + [r["eval_reward"] for r in records])


def test_stops_count_evaluations_below_the_best():
    from posttrain.stages.rlhf_monitor import Stops

    stops = Stops(0.0, 0.0, eval_reward_drops=2)
    flags = [stops.observe_eval({"step": s, "eval_reward": v}) for s, v in [(1, 1.0), (2, 2.0), (3, 1.5), (4, 2.5), (5, 2.4)]]
    assert flags == [True, True, False, True, False] and not stops.reason  # a new best resets the count
    stops.observe_eval({"step": 6, "eval_reward": 0.1})
    assert "2 evaluations in a row" in stops.reason and (stops.best, stops.best_step) == (2.5, 4)


def test_grpo_resumes_exactly_after_a_kill(tiny_model_dir, sums_file, tmp_path):
    from safetensors.torch import load_file

    from posttrain.stages.rlhf import run_rlhf

    settings = {"algo": "grpo", "reward_fn": "posttrain.rewards:answer_format", "ppo.steps": 4, "ppo.save_steps": 2,
                "ppo.epochs": 2, "rollout.batch_size": 4, "rollout.group_size": 2, "ppo.minibatch_size": 2}
    run_rlhf(ppo_config(tiny_model_dir, "", sums_file, tmp_path / "straight", **settings))
    run_rlhf(ppo_config(tiny_model_dir, "", sums_file, tmp_path / "killed", **settings), halt_after_step=3)
    run_rlhf(ppo_config(tiny_model_dir, "", sums_file, tmp_path / "killed", **settings, resume=True))
    straight = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_the_math_task_runs_out_of_the_box_with_exact_answer(tiny_model_dir, tmp_path, capsys):
    """The README's command on the shipped sample task (a tiny model, 1 step)."""
    from posttrain.cli import main

    assert main(["rlhf", "--algo", "grpo", "--reward-fn", "posttrain.rewards:exact_answer", "--prompts",
                 str(REPO / "data_samples/math.jsonl"), "--model", str(tiny_model_dir), "--output", str(tmp_path / "g"),
                 "--ppo.steps", "1", "--rollout.max_new_tokens", "4", "--lora.r", "4"]) == 0
    history = json.loads((tmp_path / "g" / "metrics.json").read_text())["history"]
    assert 0.0 <= history[0]["reward/exact_answer"] <= 1.0


def test_exact_answer_reads_the_last_number():
    from posttrain.rewards import exact_answer

    completions = ["The answer is 12.", "12 minus 2 is 10", "It is 1,250 grams.", "I don't know.",
                   [{"role": "assistant", "content": "= 7"}]]
    assert exact_answer(None, completions, [12, 12, 1250, 3, 7]) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert math.isclose(exact_answer(None, ["about 2.50"], ["2.5"])[0], 1.0)
