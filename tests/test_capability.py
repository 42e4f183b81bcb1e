"""k-shot multiple choice: choice log-likelihoods and acc/acc_norm against log-probs computed here with a plain
forward pass, the exact prompt, where shots come from, per-subject and macro averages, the paired bootstrap,
malformed rows, `posttrain eval --benchmark` end to end, and lm-evaluation-harness (the offline error for real,
and its scores on a local task matching ours)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.capability import (Question, Scores, encode_pair, grade, kshot_prompt, load_benchmark, paired_bootstrap,
                                  read_questions, score_benchmark, summarise)
from posttrain.data import DataError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data_samples" / "multiple_choice.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mc(question: str, choices: list[str], answer, subject: str = "science", **extra) -> dict:
    return {"question": question, "choices": choices, "answer": answer, "subject": subject, **extra}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from posttrain.models import load_for_inference

    return load_for_inference(str(tiny_model_dir), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

# Two questions of one subject, each with a one-letter choice and a long one. A random model gives every
# token about the same log-probability (about -log(vocab) = -10.8), so the one-token choice has the highest
# log-likelihood (acc picks it) while the long one has the highest log-likelihood per character (acc_norm picks it).
SHOT = Question("Which gas do plants take in?", ["carbon dioxide", "x"], 0, "science")
QUESTIONS = [Question("What is the closest star to the Earth?", ["x", "the Sun, which is about eight light-minutes away"], 1, "science"),
             Question("Which planet is known as the Red Planet?", ["M", "Venus, which is hot and covered in thick clouds"], 0, "science")]


def plain_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from one forward pass of the whole string, no batching, no cache."""
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    continuation_ids = whole[len(context_ids):]  # lm-eval's split
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    # continuation token j sits at len(context_ids) + j and is predicted by the position before it
    return sum(logprobs[len(context_ids) + j - 1, t].item() for j, t in enumerate(continuation_ids))


def test_choice_loglikelihoods_acc_and_acc_norm_on_two_questions(tiny):
    from posttrain.capability import Benchmark

    benchmark = Benchmark("hand-built", QUESTIONS, {"science": [SHOT]}, "by hand")
    scores = score_benchmark(tiny.model, tiny.tokenizer, benchmark)
    for q, got in zip(QUESTIONS, scores.loglikelihoods):
        context = kshot_prompt([SHOT], q)
        expected = [plain_loglikelihood(tiny.model, tiny.tokenizer, context, " " + c) for c in q.choices]
        assert got == pytest.approx(expected, abs=1e-4)
    # acc: the answer has the highest log-likelihood; acc_norm: the highest log-likelihood per character of the
    # choice (lm-eval divides by len(choice), the leading space not counted)
    lls = scores.loglikelihoods
    expected_acc = [float(max(range(2), key=lambda i: ll[i]) == q.answer) for q, ll in zip(QUESTIONS, lls)]
    expected_norm = [float(max(range(2), key=lambda i: ll[i] / len(q.choices[i])) == q.answer) for q, ll in zip(QUESTIONS, lls)]
    assert scores.acc == expected_acc and scores.acc_norm == expected_norm
    # the example does what it was built for: the two metrics pick different choices in both questions
    assert expected_acc == [0.0, 1.0] and expected_norm == [1.0, 0.0]
    assert summarise(scores)["acc"] == 0.5 and scores.chance == [0.5, 0.5]


def test_cached_prefix_batches_give_the_numbers_of_single_passes(tiny, tmp_path):
    # several subjects, shots, uneven choice counts, letter answers: every log-likelihood equals a plain pass
    path = write_jsonl(tmp_path / "b.jsonl", [
        mc("What is 2 plus 2?", ["4", "5", "22"], "A", "arithmetic", split="dev"),
        mc("What is 3 plus 4?", ["6", "7"], 1, "arithmetic"),
        mc("What is 10 minus 3?", ["7", "13", "3", "70"], 0, "arithmetic"),
        mc("What is the capital of Peru?", ["Lima", "Quito"], "a", "capitals", split="dev"),
        mc("What is the capital of Chile?", ["Lima", "Santiago", "La Paz"], "B", "capitals"),
    ])
    benchmark = load_benchmark(path, shots=1)
    for mc_format in ("cloze", "letters"):
        scores = score_benchmark(tiny.model, tiny.tokenizer, benchmark, mc_format)
        for q, got in zip(benchmark.questions, scores.loglikelihoods):
            context = kshot_prompt(benchmark.shots[q.subject], q, mc_format)
            strings = [chr(65 + i) for i in range(len(q.choices))] if mc_format == "letters" else q.choices
            assert got == pytest.approx([plain_loglikelihood(tiny.model, tiny.tokenizer, context, " " + s) for s in strings], abs=1e-4)


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tokenizer):
    context, continuation = encode_pair(tokenizer, "Answer: ", "Paris")
    assert tokenizer.decode(context) == "Answer:" and tokenizer.decode(continuation) == " Paris"


# ---------------------------------------------------------------------------------------------
# The prompt and where the shots come from
# ---------------------------------------------------------------------------------------------


def test_kshot_prompt_is_exactly_the_documented_format():
    shots = [Question("Which gas do plants take in?", ["oxygen", "carbon dioxide"], 1, "earth_science"),
             Question("What is frozen water called?", ["ice", "steam"], 0, "earth_science")]
    q = Question("What is the hardest natural substance?", ["diamond", "chalk"], 0, "earth_science")
    assert kshot_prompt(shots, q) == (
        "The following are multiple choice questions (with answers) about earth science.\n\n"
        "Question: Which gas do plants take in?\nAnswer: carbon dioxide\n\n"
        "Question: What is frozen water called?\nAnswer: ice\n\n"
        "Question: What is the hardest natural substance?\nAnswer:")
    assert kshot_prompt(shots[:1], q, "letters") == (
        "The following are multiple choice questions (with answers) about earth science.\n\n"
        "Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nAnswer: B\n\n"
        "What is the hardest natural substance?\nA. diamond\nB. chalk\nAnswer:")
    assert kshot_prompt([], Question("Why?", ["a", "b"], 0, "")) == (
        "The following are multiple choice questions (with answers).\n\nQuestion: Why?\nAnswer:")


def _subject_rows(subject: str, n: int, **extra) -> list[dict]:
    return [mc(f"{subject} question {i}?", [f"right {i}", f"wrong {i}"], 0, subject, **extra) for i in range(n)]


def test_without_a_dev_split_the_first_k_rows_are_shots_and_not_scored(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", _subject_rows("alpha", 4) + _subject_rows("beta", 3))
    benchmark = load_benchmark(path, shots=2)
    assert [q.question for q in benchmark.shots["alpha"]] == ["alpha question 0?", "alpha question 1?"]
    assert [q.question for q in benchmark.questions] == ["alpha question 2?", "alpha question 3?", "beta question 2?"]
    for q in benchmark.questions:
        prompt = kshot_prompt(benchmark.shots[q.subject], q)
        assert q not in benchmark.shots[q.subject] and prompt.count(q.question) == 1 and prompt.endswith(q.question + "\nAnswer:")
        assert f"{q.choices[q.answer]}\n\n" not in prompt  # its own answer is never shown


def test_shots_come_from_the_split_field_or_a_dev_file(tmp_path):
    rows = _subject_rows("alpha", 2, split="dev") + _subject_rows("alpha", 3, split="test")
    benchmark = load_benchmark(write_jsonl(tmp_path / "b.jsonl", rows), shots=2)
    assert len(benchmark.questions) == 3 and all(q.split == "test" for q in benchmark.questions)
    assert all(s.split == "dev" for s in benchmark.shots["alpha"])
    dev = write_jsonl(tmp_path / "dev.jsonl", [mc("dev one?", ["a", "b"], 0, "alpha")])
    scored = write_jsonl(tmp_path / "test.jsonl", _subject_rows("alpha", 3))
    from_file = load_benchmark(scored, shots=1, dev=dev)
    assert len(from_file.questions) == 3 and from_file.shots["alpha"][0].question == "dev one?"
    with pytest.raises(DataError, match="subject 'alpha' has 1 dev rows, fewer than --shots 2"):
        load_benchmark(scored, shots=2, dev=dev)


def test_max_questions_takes_questions_in_turn_from_each_subject(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", _subject_rows("alpha", 5) + _subject_rows("beta", 5) + _subject_rows("gamma", 2))
    kept = load_benchmark(path, shots=1, max_questions=5).questions
    assert [q.question for q in kept] == ["alpha question 1?", "beta question 1?", "gamma question 1?",
                                          "alpha question 2?", "beta question 2?"]


def test_the_shipped_benchmark_is_ten_subjects_with_a_dev_split():
    rows = read_questions(SAMPLE)
    benchmark = load_benchmark(SAMPLE, shots=5)
    assert len(rows) == 350 and len(benchmark.questions) == 300 and len(benchmark.shots) == 10
    assert all(len(shots) == 5 and all(s.split == "dev" for s in shots) for shots in benchmark.shots.values())
    assert len({q.question for q in rows}) == len(rows)  # no question twice, so none is its own shot


# ---------------------------------------------------------------------------------------------
# Aggregation and the bootstrap
# ---------------------------------------------------------------------------------------------


def test_per_subject_averages_and_the_macro_average():
    # subject a: 3 questions, 2 right (acc 2/3), 4 choices each; subject b: 1 question, wrong, 2 choices.
    # macro = (2/3 + 0) / 2 = 1/3 (each subject counts once), while the micro average would be 2/4
    scores = Scores(subjects=["a", "a", "b", "a"], acc=[1.0, 0.0, 0.0, 1.0], acc_norm=[1.0, 1.0, 1.0, 1.0],
                    chance=[0.25, 0.25, 0.5, 0.25])
    stats = summarise(scores)
    assert stats["subjects"]["a"] == {"acc": pytest.approx(2 / 3), "acc_norm": 1.0, "chance": 0.25, "questions": 3}
    assert stats["subjects"]["b"] == {"acc": 0.0, "acc_norm": 1.0, "chance": 0.5, "questions": 1}
    assert stats["acc"] == pytest.approx(1 / 3) and stats["acc_norm"] == 1.0 and stats["chance"] == pytest.approx(0.375)
    assert stats["questions"] == 4


def test_grade_breaks_ties_toward_the_first_choice_like_numpy_argmax():
    from posttrain.capability import Benchmark

    q = Question("q?", ["ab", "cd"], 1, "s")
    scores = grade(Benchmark("x", [q], {"s": []}, ""), [[-2.0, -2.0]])
    assert scores.acc == [0.0] and scores.acc_norm == [0.0]


def test_paired_bootstrap_of_the_macro_difference():
    subjects = ["a"] * 4 + ["b"] * 4
    same = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert paired_bootstrap(same, same, subjects) == (0.0, 0.0, 0.0)  # paired: identical answers never differ
    # a: model right on 2 more of 4 questions (+0.5); b: the same (0): the macro difference is 0.25
    model = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    baseline = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    diff, low, high = paired_bootstrap(model, baseline, subjects)
    assert diff == 0.25 and 0.0 <= low < 0.25 < high <= 0.5  # b never differs, so the macro difference is at most 0.5 / 2


# ---------------------------------------------------------------------------------------------
# Malformed rows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row, message", [
    (mc("Q?", ["a", "b", "c"], 3), "line 2: field 'answer' is 3, but there are only 3 choices"),
    (mc("Q?", ["a", "b"], "C"), "line 2: field 'answer' is 'C', but there are only 2 choices"),
    (mc("Q?", ["a", "b"], "first"), "line 2: field 'answer' must be a choice index"),
    (mc("Q?", ["only one"], 0), "line 2: field 'choices' must be a list of at least 2 strings"),
    (mc("Q?", "a, b", 0), "line 2: field 'choices' must be a list"),
    (mc("Q?", ["a", ""], 0), "line 2: field 'choices\\[1\\]' must be a non-empty string"),
    (mc("Q?", ["a", "a"], 0), "line 2: field 'choices' has the same choice twice"),
    ({"choices": ["a", "b"], "answer": 0}, "line 2: field 'question' is missing or empty"),
    (mc("Q?", ["a", "b"], None), "line 2: field 'answer' must be a choice index"),
])
def test_a_malformed_row_is_one_error_naming_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [mc("Fine?", ["yes", "no"], 0), row])
    with pytest.raises(DataError, match=f"{path}, {message}"):
        read_questions(path)


def test_a_malformed_benchmark_fails_the_command_before_any_model_loads(tmp_path, capsys):
    from posttrain.cli import main

    path = write_jsonl(tmp_path / "bad.jsonl", [mc("Fine?", ["yes", "no"], 0), mc("Q?", ["a", "b"], 5)])
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--benchmark", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 2: field 'answer' is 5" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# posttrain eval --benchmark, end to end
# ---------------------------------------------------------------------------------------------


def save_adapter(folder: Path, base_dir: Path, noise: float) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.models import write_metadata

    torch.manual_seed(5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, noise)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder)
    write_metadata(folder, stage="sft", base_model=str(base_dir))
    return folder


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    keep = [r for r in rows if r["subject"] in ("world_capitals", "opposites")]
    dev = [r for r in keep if r["split"] == "dev"]
    return write_jsonl(tmp_path_factory.mktemp("mc") / "mc.jsonl", dev[:2] + dev[5:7] + [r for r in keep if r["split"] == "test"][::6])


def test_eval_scores_an_adapter_against_its_base_with_a_bootstrap_interval(tmp_path, tiny_model_dir, small_benchmark, capsys):
    from posttrain.cli import main

    adapter = save_adapter(tmp_path / "adapter", tiny_model_dir, noise=0.5)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(adapter), "--baseline", str(tiny_model_dir), "--benchmark", str(small_benchmark),
                 "--shots", "2", "--mc_precision", "fp32", "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    final, details = metrics["final"], metrics["capability"]
    assert final["capability_questions"] == 10 and final["capability_chance"] == 0.25
    assert set(details["model"]["subjects"]) == {"world_capitals", "opposites"}
    # the adapter moved the model, so its choices' log-likelihoods differ from the base's; the reported
    # difference is the difference of the two reported macro averages
    assert final["capability_acc_diff"] == pytest.approx(final["capability_acc"] - final["baseline_capability_acc"])
    low, high = final["capability_acc_diff_ci95"]
    assert low <= final["capability_acc_diff"] <= high
    report = (out / "report.md").read_text()
    assert "## Capability: k-shot multiple choice" in report and "| macro average | 10 | 0.25 |" in report
    assert "| model | acc - baseline | acc_norm - baseline |" in report
    assert "| world_capitals |" in capsys.readouterr().out  # the per-subject table on the console too


def test_eval_loads_a_merged_folder_and_scores_it_like_its_adapter(tmp_path, tiny_model_dir, small_benchmark):
    from posttrain.capability_report import score_model
    from posttrain.models import merge_and_save

    adapter = save_adapter(tmp_path / "adapter", tiny_model_dir, noise=0.5)
    merge_and_save(str(adapter), tmp_path / "merged")
    benchmark = load_benchmark(small_benchmark, shots=1)
    def flat(name: str) -> list[float]:
        return [ll for lls in score_model(name, benchmark, precision="fp32").loglikelihoods for ll in lls]

    merged = flat(str(tmp_path / "merged"))
    assert merged == pytest.approx(flat(str(adapter)), abs=1e-3)
    assert merged != pytest.approx(flat(str(tiny_model_dir)), abs=1e-3)  # the adapter's change is in both


# ---------------------------------------------------------------------------------------------
# lm-evaluation-harness
# ---------------------------------------------------------------------------------------------


def test_lm_eval_offline_says_its_datasets_cannot_be_reached_and_what_to_do(tmp_path, tiny_model_dir, monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    from posttrain.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as in every test (conftest); the hub is not reachable anyway
    assert main(["eval", "--model", str(tiny_model_dir), "--lm_eval", "arc_easy", "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--lm_eval arc_easy: lm-evaluation-harness could not reach its datasets" in err
    assert "--benchmark FILE --shots 5" in err and "Traceback" not in err
    assert main(["eval", "--model", str(tiny_model_dir), "--lm_eval", "arc_eazy"]) == 2
    assert "not a registered task" in capsys.readouterr().err


LOCAL_TASK = """\
task: posttrain_local_mc
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
output_type: multiple_choice
doc_to_text: "The following are multiple choice questions (with answers) about {{{{subject}}}}.\\n\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - {{metric: acc}}
  - {{metric: acc_norm}}
"""


def test_lm_eval_runs_an_adapter_checkpoint_and_agrees_with_our_zero_shot_scores(tmp_path, tiny_model_dir):
    pytest.importorskip("lm_eval")
    from posttrain.capability_report import score_model
    from posttrain.harness import load_tasks, run_lm_eval

    rows = [mc(q.question, q.choices, q.answer, "science") for q in QUESTIONS[:1] * 3 + QUESTIONS[1:]]  # acc != acc_norm
    rows += [mc("What is the capital of Peru?", ["Lima", "a city far to the north of Quito"], 0, "geography"),
             mc("Which is a mammal?", ["a whale", "a trout", "a snake"], 0, "biology")]
    data = write_jsonl(tmp_path / "local.jsonl", rows)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local.yaml").write_text(LOCAL_TASK.format(data=data))
    adapter = save_adapter(tmp_path / "adapter", tiny_model_dir, noise=0.5)

    manager = load_tasks(["posttrain_local_mc"], include_path=str(tmp_path / "tasks"))
    theirs = run_lm_eval(str(adapter), "posttrain_local_mc", shots=0, precision="fp32", manager=manager)["posttrain_local_mc"]
    ours = summarise(score_model(str(adapter), load_benchmark(data, shots=0), precision="fp32"))
    micro = {m: sum(s[m] * s["questions"] for s in ours["subjects"].values()) / ours["questions"] for m in ("acc", "acc_norm")}
    assert theirs["acc,none"] == pytest.approx(micro["acc"]) and theirs["acc_norm,none"] == pytest.approx(micro["acc_norm"])
    assert micro["acc"] != micro["acc_norm"]  # the two metrics disagree here, so both definitions are checked


# ---------------------------------------------------------------------------------------------
# Pipelines: the capability section of the report
# ---------------------------------------------------------------------------------------------

TINY_SFT_DPO = """\
output: OUT
model: MODEL
stages:
  sft:
    kind: sft
    data: SAMPLES/sft_sharegpt.jsonl
    lora: {r: 4, alpha: 8}
    train: {max_steps: 2, batch_size: 2, lr: 1.0e-2}
  dpo:
    kind: dpo
    model: ${sft}
    data: SAMPLES/preferences_implicit.jsonl
    train: {max_steps: 2, batch_size: 2, eval_split: 0, lr: 1.0e-2}
  merge: {kind: merge, model: "${dpo}"}
report: {benchmark: BENCHMARK, shots: 1, max_questions: 4}
"""


def test_a_pipeline_report_scores_the_base_and_each_stage_and_caches_the_scores(tmp_path, tiny_model_dir, small_benchmark,
                                                                                monkeypatch):
    import posttrain.capability_report
    from posttrain.pipeline import pipeline_main, read_manifest

    scored: list[str] = []
    original = posttrain.capability_report.score_model

    def spy(name, *args, **kwargs):
        scored.append(kwargs.get("label", ""))
        return original(name, *args, **{**kwargs, "precision": "fp32"})

    monkeypatch.setattr(posttrain.capability_report, "score_model", spy)
    out = tmp_path / "out"
    path = tmp_path / "p.yaml"
    path.write_text(TINY_SFT_DPO.replace("OUT", str(out)).replace("MODEL", str(tiny_model_dir))
                    .replace("SAMPLES", str(REPO / "data_samples")).replace("BENCHMARK", str(small_benchmark)))
    pipeline_main([str(path)])
    assert scored == ["base", "sft", "dpo"]  # the merge stage holds the dpo adapter's weights: not scored twice
    report = (out / "report.md").read_text()
    section = report.split("## Capability: k-shot multiple choice")[1]
    assert "| subject | questions | chance | base acc | base acc_norm | sft acc | sft acc_norm | dpo acc | dpo acc_norm |" in section
    assert "| model | acc - base | acc_norm - base |" in section and "| sft | " in section and "| dpo | " in section
    cached = read_manifest(out)["capability"]
    assert set(cached) == {"base", "sft", "dpo"} and len(cached["sft"]["scores"]["acc"]) == 4

    # nothing changed: the scores come from the manifest; a changed stage is scored again, and what follows it
    scored.clear()
    pipeline_main([str(path)])
    assert scored == [] and (out / "report.md").read_text().split("## Capability")[1] == report.split("## Capability")[1]
    pipeline_main([str(path), "--dpo.beta", "0.3"])
    assert scored == ["dpo"]


def test_a_pipeline_with_a_bad_benchmark_fails_before_training(tmp_path, tiny_model_dir):
    from posttrain.config import ConfigError
    from posttrain.pipeline import load_pipeline

    bad = write_jsonl(tmp_path / "bad.jsonl", [mc("Fine?", ["yes", "no"], 0), mc("Q?", ["a"], 0)])
    path = tmp_path / "p.yaml"
    path.write_text(TINY_SFT_DPO.replace("OUT", str(tmp_path / "out")).replace("MODEL", str(tiny_model_dir))
                    .replace("SAMPLES", str(REPO / "data_samples")).replace("BENCHMARK", str(bad)))
    with pytest.raises(ConfigError, match=f"p.yaml, line 15: report.benchmark: {bad}, line 2: field 'choices' must be a list of at least 2"):
        load_pipeline(path)
