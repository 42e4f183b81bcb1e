"""--chat_template: a template file, a built-in name or another model's template in place of the model's own,
checked before use and saved with the checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from posttrain.config import ConfigError
from posttrain.templates import with_chat_template

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"
# a plain "### role:" layout that writes only a token the SmolLM2 vocabulary has (<|im_end|>)
HASHES = ("{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] }}{% if m['role'] == 'assistant' %}"
          "{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}"
          "{% endif %}")
CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_a_template_file_a_builtin_and_a_models_template(tmp_path, tokenizer, tiny_model_dir):
    path = tmp_path / "hashes.jinja"
    path.write_text(HASHES)
    mine = with_chat_template(copy.deepcopy(tokenizer), str(path))
    assert mine.apply_chat_template(CONVERSATION, tokenize=False) == "### user:\nHi\n### assistant:\nHello<|im_end|>\n"
    chatml = with_chat_template(copy.deepcopy(mine), "chatml")
    assert chatml.apply_chat_template(CONVERSATION, tokenize=False).startswith("<|im_start|>user\nHi<|im_end|>")
    theirs = with_chat_template(copy.deepcopy(mine), str(tiny_model_dir))
    assert theirs.chat_template == tokenizer.chat_template
    assert with_chat_template(mine, "") is mine  # no override: the model's own


@pytest.mark.parametrize("template, fragment", [
    ("{{ '<|tool_call_start|>' }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
     "the template writes <|tool_call_start|>, which this model's tokenizer has no token for"),
    ("{{ messages[0]['content'] + messages[5]['content'] }}", "does not render a user/assistant conversation"),
])
def test_a_template_the_model_cannot_use_is_refused(tmp_path, tokenizer, template, fragment):
    path = tmp_path / "bad.jinja"
    path.write_text(template)
    strict = copy.deepcopy(tokenizer)
    with pytest.raises(ConfigError, match=fragment):
        with_chat_template(strict, str(path))
    assert strict.chat_template == tokenizer.chat_template  # left as it was
    with pytest.raises(ConfigError, match="not a built-in template \\(chatml\\), a template file, or a model"):
        with_chat_template(strict, "no-such-template")


def test_sft_trains_with_the_template_and_saves_it(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from posttrain.cli import main

    path = tmp_path / "hashes.jinja"
    path.write_text(HASHES)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join((SAMPLES / "sft_messages.jsonl").read_text().splitlines()[:4]) + "\n")
    output = tmp_path / "out"
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(rows), "--output", str(output), "--chat_template",
                 str(path), "--max_steps", "1", "--batch_size", "2", "--report_to", "none"]) == 0
    assert AutoTokenizer.from_pretrained(output).chat_template == HASHES
    assert json.loads((output / "metrics.json").read_text())["final"]["steps"] == 1
