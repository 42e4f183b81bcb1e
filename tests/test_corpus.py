"""Every malformed file in tests/corpus/ gives one clear error through the command line, exactly the one
tests/corpus/cases.yaml names: no traceback, exit status 2, and nothing trained or left in the output folder.

The cases run in-process through ``posttrain.cli.main`` (each fails before any model loads, so the corpus takes
about a second); three of them also run as real ``python -m posttrain.cli`` processes."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posttrain.cli import main

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
DATA_FOLDERS = ("sft/", "preferences/", "prompts/")


@pytest.fixture(autouse=True)
def _corpus_cwd(monkeypatch):
    monkeypatch.chdir(CORPUS)  # cases name their files relative to the corpus, as the messages do


def _file(case: dict) -> str:
    return next(word for word in shlex.split(case["run"]) if "/" in word and (CORPUS / word).exists() or word.endswith("no_such_file.jsonl"))


def test_the_corpus_is_large_and_every_file_has_its_case():
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "cases.yaml"}
    named = {_file(case) for case in CASES}
    assert len(CASES) >= 50 and len({c["error"] for c in CASES}) == len(CASES)
    assert files == named
    kinds = {f.split("/")[0] for f in files}
    assert kinds == {"sft", "preferences", "prompts", "pipelines", "configs"}


@pytest.mark.parametrize("case", CASES, ids=[_file(c) for c in CASES])
def test_malformed_file_gives_its_one_error(case, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(shlex.split(case["run"].replace("{out}", str(out)))) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("posttrain: error: ")]
    assert errors == [f"posttrain: error: {case['error']}"]
    if case["error"].startswith(DATA_FOLDERS):  # a data error goes on to list the formats that would be accepted
        assert "\nAccepted " in captured.err
    assert not out.exists()  # nothing was written: the folder the lock created is gone again


def test_some_cases_through_a_real_process(tmp_path):
    chosen = [c for c in CASES if _file(c) in ("sft/binary.jsonl", "configs/nested_typo.yaml", "pipelines/negative_lr.yaml")]
    assert len(chosen) == 3
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CORPUS.parents[1]), os.environ.get("PYTHONPATH", "")])}
    runs = [subprocess.Popen([sys.executable, "-m", "posttrain.cli", *shlex.split(c["run"].replace("{out}", str(tmp_path / f"out{i}")))],
                             cwd=CORPUS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, c in enumerate(chosen)]
    for case, run in zip(chosen, runs):
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 2, stderr
        assert "Traceback" not in stderr + stdout
        assert [line for line in stderr.splitlines() if line.startswith("posttrain: error: ")] == [f"posttrain: error: {case['error']}"]
