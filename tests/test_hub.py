"""Publishing: model cards that keep peft's front matter, `posttrain push DIR REPO` and --push_to_hub, and the
errors a machine without the hub gets (the test machine has none: HF_HUB_OFFLINE is set in conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.config import ConfigError


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter saved by peft (which writes a README.md with YAML front matter) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.config import LoraSection
    from posttrain.models import attach_adapter

    folder = tmp_path_factory.mktemp("adapter")
    attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora=LoraSection(r=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_the_model_card_keeps_peft_front_matter_and_adds_posttrains(adapter_folder, tmp_path, tiny_model_dir):
    import shutil

    from huggingface_hub import metadata_load

    from posttrain.report import write_model_card

    folder = Path(shutil.copytree(adapter_folder, tmp_path / "card"))
    written_by_peft = metadata_load(folder / "README.md")
    assert written_by_peft["library_name"] == "peft"  # what there is to keep
    write_model_card(folder, "SFT", str(tiny_model_dir), "trl-lib/Capybara", {"lr": 0.1}, {"last_loss": 1.5})
    card = metadata_load(folder / "README.md")
    for key in ("base_model", "library_name", "pipeline_tag"):
        assert card[key] == written_by_peft[key]
    assert set(written_by_peft["tags"]) <= set(card["tags"]) and {"posttrain", "trl", "sft"} <= set(card["tags"])
    assert card["datasets"] == ["trl-lib/Capybara"]  # a hub dataset; a local file is not named
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n") and "# posttrain SFT checkpoint" in text and "| last_loss | 1.5" in text

    plain = tmp_path / "plain"  # no card yet (a reward model's folder, say): the front matter is posttrain's own
    plain.mkdir()
    write_model_card(plain, "reward model", "smollm2-135m-instruct", str(tmp_path / "pairs.jsonl"), {}, {})
    card = metadata_load(plain / "README.md")
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and card["pipeline_tag"] == "text-classification"
    assert "datasets" not in card and {"posttrain", "reward-trainer"} <= set(card["tags"])


def test_a_push_uploads_the_model_not_the_machines_files(adapter_folder, tmp_path):
    import shutil

    from posttrain.hub import upload_files

    folder = Path(shutil.copytree(adapter_folder, tmp_path / "run"))
    for name in ("checkpoints/checkpoint-2/optimizer.pt", ".writing/x", "posttrain.lock", "logs/events.out.tfevents.1"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    files = upload_files(folder)
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
            "logs/events.out.tfevents.1"} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoints/", ".writing/")) or f == "posttrain.lock"]


def test_push_offline_is_one_clear_error(adapter_folder, capsys):
    assert main(["push", str(adapter_folder), "me/my-adapter"]) == 2
    error = capsys.readouterr().err
    assert "the Hugging Face Hub is unreachable from here" in error and "posttrain push OUTPUT REPO" in error
    assert "Traceback" not in error


def test_push_without_a_network_or_a_token_says_so(adapter_folder, monkeypatch, tmp_path):
    from huggingface_hub import constants

    from posttrain.hub import push

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(ConfigError, match="no Hugging Face token; run `hf auth login` or set HF_TOKEN"):
        push(adapter_folder, "me/my-adapter")
    # a token, but nothing listening where the hub should be: the connection fails and the error says what it means
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="the Hugging Face Hub is unreachable from here"):
        push(adapter_folder, "me/my-adapter")


def test_push_refuses_an_unfinished_run_and_a_bad_repo_id(tmp_path, adapter_folder, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    assert main(["push", str(unfinished), "me/x"]) == 2
    assert "is a run that did not finish" in capsys.readouterr().err
    assert main(["push", str(adapter_folder), "not a repo"]) == 2
    assert "give a hub repo id, org/name" in capsys.readouterr().err


def test_push_to_hub_on_a_stage_fails_before_the_data_is_read(tmp_path, capsys):
    code = main(["sft", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out"),
                 "--push_to_hub", "me/my-sft"])
    error = capsys.readouterr().err
    assert code == 2 and "--push_to_hub me/my-sft: the Hugging Face Hub is unreachable" in error
    assert "missing.jsonl" not in error
    # TRL's name for it works too
    code = main(["dpo", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out2"),
                 "--hub_model_id", "me/my-dpo"])
    assert code == 2 and "--push_to_hub me/my-dpo: the Hugging Face Hub is unreachable" in capsys.readouterr().err
