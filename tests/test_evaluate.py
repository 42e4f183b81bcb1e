"""`posttrain eval`: win-rate and accuracy by hand, log-probs of responses against a plain loop, the implicit
reward's reference, and a tiny end-to-end comparison judged by a tiny reward model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.config import ConfigError, EvalConfig, RewardConfig, load_config
from posttrain.evaluate import pair_accuracy, response_logprobs, run_eval, win_rate

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "data_samples" / "prompts.jsonl"
PAIRS = REPO / "data_samples" / "preferences_implicit.jsonl"


def test_win_rate_counts_a_tie_as_half():
    # wins: 1 > 0 (1), 2 == 2 (0.5), 3 < 4 (0), 0 > -1 (1) -> 2.5 of 4
    assert win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == 0.625


def test_pair_accuracy_needs_chosen_strictly_above_rejected():
    # margins 1, 0, -1: only the first pair is right; they average to 0
    assert pair_accuracy([1.0, 0.0, 2.0], [0.0, 0.0, 3.0]) == {"accuracy": 1 / 3, "mean_margin": 0.0, "pairs": 3}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from posttrain.models import load_for_inference

    return load_for_inference(str(tiny_model_dir))


def test_response_logprobs_sum_only_response_tokens_and_ignore_padding(tiny):
    from posttrain.data import encode_response, render_prompt

    model, tokenizer = tiny.model, tiny.tokenizer
    prompts = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "What is two plus two, exactly?"}]]
    responses = ["Apple.", "Four, because two and two make four."]
    batched = response_logprobs(model, tokenizer, prompts, responses, batch_size=2)
    for prompt, response, got in zip(prompts, responses, batched):
        ids = encode_response(tokenizer, prompt, response)
        start = len(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])
        assert ids[:start] == tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        # token i of the response is predicted by the logits at position i - 1
        expected = sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(start, len(ids)))
        assert got == pytest.approx(expected, abs=1e-3)
    # one row alone (no padding) gives the same number as in a padded batch
    assert response_logprobs(model, tokenizer, prompts[:1], responses[:1])[0] == pytest.approx(batched[0], abs=1e-4)


def save_adapter(folder: Path, base_dir: Path, noise: float, metadata: dict | None = None) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.models import write_metadata

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, noise) if noise else param.zero_()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder)
    write_metadata(folder, base_model=str(base_dir), **(metadata or {}))
    return folder


def test_implicit_reward_of_an_unmoved_adapter_is_zero_against_the_base(tmp_path, tiny_model_dir):
    from posttrain.data import load_preferences
    from posttrain.evaluate import implicit_reward_accuracy

    pairs = load_preferences(PAIRS).rows[:4]
    # LoRA B = 0: the policy is the base, so beta * (logp_policy - logp_reference) is 0 for every response
    adapter = save_adapter(tmp_path / "still", tiny_model_dir, noise=0.0, metadata={"stage": "dpo", "config": {"beta": 0.5}})
    result = implicit_reward_accuracy(str(adapter), pairs)
    assert result["reference"] == "the base model (adapters disabled)" and result["beta"] == 0.5
    assert result["mean_margin"] == pytest.approx(0.0, abs=1e-5) and result["accuracy"] == 0.0
    # a plain model has no reference: the margin is the sum log-prob margin, beta 1
    plain = implicit_reward_accuracy(str(tiny_model_dir), pairs)
    assert plain["reference"].startswith("none") and plain["beta"] == 1.0 and plain["mean_margin"] != 0.0


def test_implicit_reward_uses_the_adapter_a_checkpoint_started_from(tmp_path, tiny_model_dir):
    from posttrain.data import load_preferences
    from posttrain.evaluate import implicit_reward_accuracy

    pairs = load_preferences(PAIRS).rows[:2]
    start = save_adapter(tmp_path / "sft", tiny_model_dir, noise=0.2, metadata={"stage": "sft"})
    # a "DPO" checkpoint identical to where it started: its implicit reward against that start is 0
    same = save_adapter(tmp_path / "dpo", tiny_model_dir, noise=0.2, metadata={"stage": "dpo", "config": {"model": str(start), "beta": 0.1}})
    result = implicit_reward_accuracy(str(same), pairs)
    assert result["reference"] == f"the adapter it started from ({start})"
    assert result["mean_margin"] == pytest.approx(0.0, abs=1e-5)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory, tiny_model_dir):
    from posttrain.stages.reward import run_reward

    out = tmp_path_factory.mktemp("rm") / "rm"
    return run_reward(load_config(RewardConfig, None, {
        "model": str(tiny_model_dir), "data": str(PAIRS), "output": str(out), "lora.r": 4, "lora.alpha": 8,
        "train.max_steps": 1, "train.batch_size": 2, "train.eval_split": 0}))


def test_eval_compares_two_checkpoints_end_to_end(tmp_path, tiny_model_dir, tiny_rm, capsys):
    from posttrain.cli import main

    policy = save_adapter(tmp_path / "policy", tiny_model_dir, noise=0.3, metadata={"stage": "sft"})
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(policy), "--baseline", str(tiny_model_dir), "--prompts", str(PROMPTS),
                 "--reward-model", str(tiny_rm), "--data", str(PAIRS), "--max-prompts", "3", "--max-new-tokens", "4",
                 "--output", str(out)]) == 0
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["prompts"] == 3 and 0.0 <= final["win_rate"] <= 1.0
    for key in ("model_mean_reward", "baseline_mean_reward", "model_mean_length", "baseline_mean_length"):
        assert isinstance(final[key], float)
    assert final["rm_pairs"] == 3 and final["policy_pairs"] == 3
    assert final["policy_reference"] == "the base model (adapters disabled)"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"prompt", "model", "baseline", "model_reward", "baseline_reward", "model_tokens"} <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "| prompt | model | baseline |" in report and "win_rate" in report
    assert json.loads((out / "posttrain.json").read_text())["stage"] == "eval"
    assert "win_rate" in capsys.readouterr().out


def test_eval_reports_a_reward_models_accuracy(tmp_path, tiny_rm):
    out = run_eval(load_config(EvalConfig, None, {"model": str(tiny_rm), "data": str(PAIRS), "output": str(tmp_path / "e")}))
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["rm_pairs"] == 12 and 0.0 <= final["rm_accuracy"] <= 1.0 and "policy_accuracy" not in final


@pytest.mark.parametrize("values, message", [
    ({"model": "m"}, "--prompts FILE"),
    ({"model": "m", "data": str(PAIRS), "baseline": "b"}, "--baseline is compared on generated responses"),
])
def test_eval_refuses_an_incomplete_request(values, message):
    with pytest.raises(ConfigError, match=message):
        run_eval(load_config(EvalConfig, None, values))


def test_eval_judges_with_a_reward_function_and_the_prompt_rows_columns(tmp_path, tiny_model_dir):
    """--reward-fn scores both models' responses (the held-out accuracy on a verifiable task) with the rows'
    own columns, next to a win-rate; here a function that checks a column against the row."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Count {n}", "answer": n}) + "\n" for n in range(4)))
    fn = tmp_path / "judge.py"
    fn.write_text("def judge(prompts, completions, answer, **kw):\n"
                  "    return [float(p == f'Count {a}') + 0.5 * (a % 2) for p, a in zip(prompts, answer)]\n")
    out = run_eval(load_config(EvalConfig, None, {"model": str(tiny_model_dir), "baseline": str(tiny_model_dir),
                                                  "prompts": str(prompts), "reward_fn": f"{fn}:judge", "max_new_tokens": 3,
                                                  "output": str(tmp_path / "e")}))
    summary = json.loads((out / "metrics.json").read_text())["final"]
    assert summary["model_mean_judge"] == pytest.approx(1.25) and summary["baseline_mean_judge"] == pytest.approx(1.25)
    assert summary["win_rate_judge"] == 0.5  # the same model: every prompt a tie
