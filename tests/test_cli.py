"""The ``posttrain`` command: sft -> chat -> merge through real subprocesses, and user errors as one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"
POSTTRAIN = [sys.executable, "-m", "posttrain.cli"]


def posttrain(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*POSTTRAIN, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_sft_chat_merge_through_the_command_line(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join((SAMPLES / "sft_messages.jsonl").read_text().splitlines()[:6]) + "\n")
    config_file = tmp_path / "sft.yaml"
    config_file.write_text(f"model: {tiny_model_dir}\ndata: {data}\nlora:\n  r: 4\ntrain:\n  batch_size: 2\n  max_length: 128\n")
    out = tmp_path / "out"

    run = posttrain("sft", "--config", str(config_file), "--output", str(out), "--max-steps", "2", "--lora.alpha", "8")
    assert run.returncode == 0, run.stderr
    assert "trainable parameters:" in run.stdout + run.stderr
    resolved = (out / "posttrain_config.yaml").read_text()
    assert "r: 4" in resolved and "alpha: 8" in resolved and "max_steps: 2" in resolved  # YAML and flags both landed
    assert json.loads((out / "metrics.json").read_text())["final"]["steps"] == 2

    chat = posttrain("chat", str(out), "--prompt", "Hello there", "--max_new_tokens", "6", "--temperature", "0.8",
                     "--top_k", "20", "--seed", "0")
    assert chat.returncode == 0, chat.stderr

    merged = tmp_path / "merged"
    merge = posttrain("merge", str(out), "--output", str(merged))
    assert merge.returncode == 0, merge.stderr
    assert AutoModelForCausalLM.from_pretrained(merged) is not None
    assert PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out) is not None


def test_chat_on_a_merged_folder_and_adapters_listing(tiny_model_dir, tmp_path, capsys):
    """In-process (the subprocess path is covered above): a merged folder answers, a seed fixes the sample."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.models import attach_adapter, merge_and_save

    adapter = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    adapter.save_pretrained(tmp_path / "adapter")
    assert main(["adapters", str(tmp_path / "adapter")]) == 0
    assert "LORA r=16 alpha=32" in capsys.readouterr().out
    merge_and_save(adapter, tmp_path / "bare")  # no tokenizer given: chat says what is missing
    assert "has no tokenizer" in _user_error(capsys, ["chat", str(tmp_path / "bare"), "--prompt", "Hi"])
    merge_and_save(attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir)), tmp_path / "merged",
                   tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    replies = []
    for _ in range(2):
        assert main(["chat", str(tmp_path / "merged"), "--prompt", "Hello", "--max_new_tokens", "6",
                     "--temperature", "0.9", "--top_p", "0.95", "--seed", "3"]) == 0
        replies.append(capsys.readouterr().out)
    assert replies[0] == replies[1] and replies[0].strip()


def test_interactive_chat_keeps_the_history(tiny_model_dir, monkeypatch, capsys):
    """Two turns, /reset, one more, then /exit: each prompt holds the turns before it, and /reset clears them."""
    import posttrain.chat as chat

    seen = []
    original = chat.reply

    def spy(loaded, messages, config):
        seen.append([m["role"] for m in messages])
        return original(loaded, messages, config)

    typed = iter(["Hi", "", "And again?", "/reset", "Fresh start", "/exit"])
    monkeypatch.setattr(chat, "reply", spy)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    assert main(["chat", str(tiny_model_dir), "--max_new_tokens", "3", "--system", "Be brief."]) == 0
    assert capsys.readouterr().out.count("assistant> ") == 3
    assert seen == [["system", "user"], ["system", "user", "assistant", "user"], ["system", "user"]]


def _user_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("posttrain: error: ")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err[captured.err.index("posttrain: error: "):]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["sft", "--lora.rank", "8"], "unknown key 'lora.rank'. Did you mean 'lora.r'?"),
        (["sft", "--train.lr", "fast"], "--train.lr: train.lr: expected a number"),
        (["sft", "--output", "x"], "missing --data"),
        (["sft", "stray"], "unexpected argument 'stray'"),
        (["sfft"], "unknown command 'sfft'. Did you mean 'sft'?"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, argv, fragment):
    assert fragment in _user_error(capsys, argv)


def test_bad_data_names_the_line_before_loading_a_model(capsys, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n{"prompt": "x"}\n')
    message = _user_error(capsys, ["sft", "--model", "not/loaded", "--data", str(data), "--output", str(tmp_path / "o")])
    assert f"{data}, line 2: missing field 'completion'" in message


def test_merge_and_resume_errors(capsys, tiny_model_dir, tmp_path):
    assert "not an adapter checkpoint" in _user_error(capsys, ["merge", str(tiny_model_dir), "--output", str(tmp_path / "m")])
    data = SAMPLES / "sft_prompt_completion.jsonl"
    message = _user_error(capsys, ["sft", "--model", str(tiny_model_dir), "--data", str(data),
                                   "--output", str(tmp_path / "o"), "--resume"])
    assert "--resume: no checkpoint under" in message


def test_unreachable_hub_id_is_a_user_error():
    run = posttrain("chat", "no-such-org/no-such-model", "--prompt", "Hi")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    error = [line for line in run.stderr.splitlines() if line.startswith("posttrain: error:")]
    assert error and "could not load 'no-such-org/no-such-model'" in error[0]
    assert "Pass a local model folder" in run.stderr


def test_help_lists_every_option_with_its_doc(capsys):
    assert main(["sft", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lora.r" in text and "LoRA rank." in text and "--train.save_steps" in text
    assert main([]) == 0 and "sft" in capsys.readouterr().out
