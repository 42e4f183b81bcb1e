"""Pipelines: every shipped file parses and dry-runs; bad files fail before training, naming the line and key;
tiny-model pipelines run end to end, skip what has not changed, rerun what has, and resume an interrupted stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.config import ConfigError
from posttrain.pipeline import load_pipeline, pipeline_main, read_manifest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "pipelines").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # pipeline files name data_samples/... relative to the repository root


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_pipelines_parse_and_dry_run(path, tmp_path, capsys):
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# Run: posttrain pipeline pipelines/{path.name}") and "minutes on a 2-core CPU" in first
    pipeline_main([str(path.relative_to(REPO)), "--dry-run", "--output", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    pipeline = load_pipeline(path.relative_to(REPO))
    for stage in pipeline.stages:
        assert f"{stage.name} ({stage.kind})" in printed and f"posttrain {stage.kind} " in printed
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_shipped_pipelines_chain_their_stages():
    kinds = {p.stem: [s.kind for s in load_pipeline(p.relative_to(REPO)).stages] for p in SHIPPED}
    assert kinds["dpo"][:3] == ["sft", "dpo", "merge"]
    assert kinds["rlhf"][:4] == ["sft", "rm", "rlhf", "merge"]
    rlhf = {s.name: s for s in load_pipeline("pipelines/rlhf.yaml").stages}
    assert rlhf["ppo"].config.model == "runs/pipeline-rlhf/sft" and rlhf["ppo"].config.reward_model == "runs/pipeline-rlhf/rm"


GOOD = """\
output: OUT
model: MODEL
stages:
  sft:
    kind: sft
    data: data_samples/sft_sharegpt.jsonl
    train: {max_steps: 2}
  dpo:
    kind: dpo
    model: ${sft}
    data: data_samples/preferences_implicit.jsonl
  merge: {kind: merge, model: "${dpo}"}
"""


@pytest.mark.parametrize("old, new, expected", [
    ("kind: sft", "kind: sftt", ["line 5", "unknown kind 'sftt'", "Did you mean 'sft'"]),
    ("{max_steps: 2}", "{max_stepz: 2}", ["line 7", "stage 'sft'", "train.max_stepz", "train.max_steps"]),
    ("data: data_samples/preferences_implicit.jsonl", "data: data_samples/nope.jsonl", ["line 11", "nope.jsonl does not exist"]),
    ("model: ${sft}", "model: ${sfx}", ["line 10", "no stage named 'sfx'"]),
    ("model: ${sft}", "model: ${merge}", ["line 10", "refers to stage 'merge', which runs later"]),
    ("merge: {kind: merge, model: \"${dpo}\"}", "merge: {kind: merge}", ["line 12", "stage 'merge'", "missing 'model'"]),
    ("output: OUT", "outptu: OUT", ["line 1", "unknown key 'outptu'"]),
    ("  merge: {kind: merge, model: \"${dpo}\"}", "  rl: {kind: rlhf, reward_model: '${sft}', prompts: data_samples/prompts.jsonl}",
     ["line 12", "refers to stage 'sft' (sft), whose output is an adapter", "must be a reward model"]),
    ("data: data_samples/sft_sharegpt.jsonl", "data: data_samples/preferences_implicit.jsonl", ["line 6", "preferences_implicit.jsonl, line 1: no recognised fields"]),
])
def test_a_bad_pipeline_fails_before_training_naming_line_and_key(old, new, expected, tmp_path, tiny_model_dir):
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new).replace("OUT", str(tmp_path / "out")).replace("MODEL", str(tiny_model_dir)))
    with pytest.raises(Exception) as caught:
        pipeline_main([str(path)])
    message = str(caught.value)
    for part in expected:
        assert part in message
    assert not (tmp_path / "out").exists()  # nothing ran


def test_cli_reports_a_bad_pipeline_as_one_message(tmp_path, capsys):
    from posttrain.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("stages:\n  sft:\n    kind: sft\n    data: data_samples/sft_messages.jsonl\n    lora: {rank: 4}\n")
    assert main(["pipeline", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 5" in err and "lora.rank" in err and "Traceback" not in err


def test_overrides_reach_any_stage_and_unknown_ones_fail(tmp_path, tiny_model_dir):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("OUT", str(tmp_path / "out")).replace("MODEL", str(tiny_model_dir)))
    pipeline = load_pipeline(path, {"sft.train.lr": "1e-4", "dpo.beta": "0.3", "sft.lora.r": "4"})
    stages = {s.name: s for s in pipeline.stages}
    assert stages["sft"].config.train.lr == 1e-4 and stages["sft"].config.lora.r == 4
    assert stages["sft"].config.train.max_steps == 2 and stages["dpo"].config.beta == 0.3
    assert stages["dpo"].config.model == str(tmp_path / "out" / "sft")
    with pytest.raises(ConfigError, match="--dpo.betta.*unknown key 'betta'"):
        load_pipeline(path, {"dpo.betta": "0.3"})
    with pytest.raises(ConfigError, match="--sftt.train.lr: give --STAGE.KEY"):
        load_pipeline(path, {"sftt.train.lr": "1e-4"})


# ---------------------------------------------------------------------------------------------
# Tiny end-to-end runs
# ---------------------------------------------------------------------------------------------

TINY_DPO = """\
output: OUT
model: MODEL
stages:
  sft:
    kind: sft
    data: data_samples/sft_sharegpt.jsonl
    lora: {r: 4, alpha: 8}
    train: {max_steps: 2, batch_size: 2, save_steps: 1, logging_steps: 1}
  dpo:
    kind: dpo
    model: ${sft}
    data: data_samples/preferences_implicit.jsonl
    train: {max_steps: 2, batch_size: 2, eval_split: 0, logging_steps: 1}
  merge: {kind: merge, model: "${dpo}"}
report: {prompts: data_samples/prompts.jsonl, samples: 2, max_new_tokens: 4}
"""


@pytest.fixture()
def calls(monkeypatch):
    """Names of the stage functions the pipeline calls, in order (the same functions the CLI calls)."""
    import posttrain.commands
    import posttrain.stages.dpo
    import posttrain.stages.reward
    import posttrain.stages.rlhf
    import posttrain.stages.sft

    seen: list[tuple[str, object]] = []
    for module, name in [(posttrain.stages.sft, "run_sft"), (posttrain.stages.dpo, "run_dpo"), (posttrain.stages.reward, "run_reward"),
                         (posttrain.stages.rlhf, "run_rlhf"), (posttrain.commands, "_merge")]:
        original = getattr(module, name)

        def spy(config, _original=original, _name=name):
            seen.append((_name, config))
            return _original(config)

        monkeypatch.setattr(module, name, spy)
    return seen


def test_tiny_sft_dpo_merge_pipeline_runs_skips_and_reruns(tmp_path, tiny_model_dir, calls):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    path = tmp_path / "dpo.yaml"
    path.write_text(TINY_DPO.replace("OUT", str(out)).replace("MODEL", str(tiny_model_dir)))

    # 1. first run: every stage, each output feeding the next
    pipeline_main([str(path)])
    assert [name for name, _ in calls] == ["run_sft", "run_dpo", "_merge"]
    assert calls[1][1].model == str(out / "sft") and calls[2][1].model == str(out / "dpo")
    AutoModelForCausalLM.from_pretrained(out / "merge")  # a standalone model
    manifest = read_manifest(out)
    for name in ("sft", "dpo", "merge"):
        entry = manifest["stages"][name]
        assert entry["status"] == "done" and entry["output"] == str(out / name) and entry["output_hash"]
        assert entry["started"] <= entry["finished"] and entry["config"]["output"] == str(out / name)
    assert manifest["stages"]["sft"]["metrics"]["steps"] == 2
    assert manifest["stages"]["dpo"]["inputs"]["model"]["hash"] and manifest["stages"]["dpo"]["inputs"]["model"]["from"] == "${sft}"
    assert len(manifest["stages"]["dpo"]["inputs"]["data"]["hash"]) == 64
    report = (out / "report.md").read_text()
    assert "![loss](sft/loss.png)" in report and "| prompt | base | sft | merge |" in report
    assert "How do I clean a microwave easily?" in report and (out / "report.html").stat().st_size > 10_000

    # 2. nothing changed: every stage is skipped and the lineage keeps its hashes
    calls.clear()
    pipeline_main([str(path)])
    assert calls == []
    assert {n: e["hash"] for n, e in read_manifest(out)["stages"].items()} == {n: e["hash"] for n, e in manifest["stages"].items()}

    # 3. one stage's config changes: it and the stages after it rerun, the ones before do not
    pipeline_main([str(path), "--dpo.beta", "0.2"])
    assert [name for name, _ in calls] == ["run_dpo", "_merge"] and calls[0][1].beta == 0.2
    assert read_manifest(out)["stages"]["sft"]["finished"] == manifest["stages"]["sft"]["finished"]

    # 4. --from forces a restart from a stage
    calls.clear()
    pipeline_main([str(path), "--dpo.beta", "0.2", "--from", "merge"])
    assert [name for name, _ in calls] == ["_merge"]


def test_an_interrupted_stage_resumes_from_its_checkpoint(tmp_path, tiny_model_dir, calls):
    out = tmp_path / "out"
    path = tmp_path / "sft.yaml"
    text = TINY_DPO.replace("OUT", str(out)).replace("MODEL", str(tiny_model_dir))
    path.write_text(text.split("  dpo:")[0])
    pipeline_main([str(path)])
    assert calls[-1][1].resume is False

    # as if killed after a checkpoint: no finished marker, the lineage still says "running"
    (out / "sft" / "posttrain.json").unlink()
    manifest = read_manifest(out)
    manifest["stages"]["sft"]["status"] = "running"
    (out / "lineage.json").write_text(json.dumps(manifest))
    assert list((out / "sft" / "checkpoints").glob("checkpoint-*"))
    pipeline_main([str(path)])
    assert calls[-1][0] == "run_sft" and calls[-1][1].resume is True
    assert read_manifest(out)["stages"]["sft"]["status"] == "done" and (out / "sft" / "posttrain.json").is_file()

    # the same leftovers under a changed config are not resumed: that run starts fresh
    (out / "sft" / "posttrain.json").unlink()
    pipeline_main([str(path), "--sft.train.lr", "1e-3"])
    assert calls[-1][1].resume is False and calls[-1][1].train.lr == 1e-3


TINY_RLHF = """\
output: OUT
model: MODEL
stages:
  sft:
    kind: sft
    data: data_samples/sft_sharegpt.jsonl
    lora: {r: 4, alpha: 8}
    train: {max_steps: 2, batch_size: 2}
  rm:
    kind: rm
    data: data_samples/preferences_implicit.jsonl
    lora: {r: 4, alpha: 8}
    train: {max_steps: 2, batch_size: 2, eval_split: 0}
  ppo:
    kind: rlhf
    model: ${sft}
    reward_model: ${rm}
    prompts: data_samples/prompts.jsonl
    rollout: {batch_size: 2, max_new_tokens: 4}
    ppo: {steps: 2, minibatch_size: 2, epochs: 1, save_steps: 0}
  merge: {kind: merge, model: "${ppo}"}
  eval:
    kind: eval
    model: ${ppo}
    baseline: ${sft}
    reward_model: ${rm}
    prompts: data_samples/prompts.jsonl
    max_prompts: 3
    max_new_tokens: 4
report: {prompts: data_samples/prompts.jsonl, samples: 2, max_new_tokens: 4}
"""


def test_tiny_sft_rm_ppo_merge_eval_pipeline(tmp_path, tiny_model_dir, calls):
    out = tmp_path / "out"
    path = tmp_path / "rlhf.yaml"
    path.write_text(TINY_RLHF.replace("OUT", str(out)).replace("MODEL", str(tiny_model_dir)))
    pipeline_main([str(path)])
    assert [name for name, _ in calls] == ["run_sft", "run_reward", "run_rlhf", "_merge"]
    ppo = calls[2][1]
    assert ppo.model == str(out / "sft") and ppo.reward_model == str(out / "rm")
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())["final"]
    assert 0.0 <= evaluation["win_rate"] <= 1.0 and evaluation["prompts"] == 3
    report = (out / "report.md").read_text()
    assert "![rl](ppo/rl.png)" in report and "| prompt | base | sft | merge |" in report and "[reward " in report
    # the report's reward column comes from the rm stage; a rerun skips everything, samples included
    calls.clear()
    pipeline_main([str(path)])
    assert calls == [] and (out / "report.md").read_text().split("## Sample responses")[1] == report.split("## Sample responses")[1]
