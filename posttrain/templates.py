"""``--chat_template FILE|NAME|MODEL``: the chat template a stage uses instead of the model's own, saved with the
checkpoint's tokenizer so chat, eval and the next stage render conversations the same way."""

from __future__ import annotations

import re
from pathlib import Path

from posttrain.config import ConfigError

# the special tokens a template writes, as templates spell them: <|im_start|>, <start_of_turn>, </s>, [INST]
_MARKER = re.compile(r"<\|[^|<>\s]+\|>|</?[a-z][a-z_]*>|\[/?INST\]")


def builtin_templates() -> dict[str, str]:
    from posttrain.models import CHATML_TEMPLATE

    return {"chatml": CHATML_TEMPLATE}


def template_text(spec: str) -> str:
    """The Jinja text ``spec`` names: a built-in name, a template file, or a model whose template to take."""
    builtins = builtin_templates()
    if spec in builtins:
        return builtins[spec]
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--chat_template {spec}: not a text file; give a Jinja template file.") from None
    from posttrain.models import ModelError, model_tokenizer

    try:
        template = model_tokenizer(spec).chat_template if path.is_dir() or "/" in spec else None
    except ModelError as err:
        raise ConfigError(f"--chat_template {spec}: {err}") from None
    if not template:
        raise ConfigError(f"--chat_template {spec!r}: not a built-in template ({', '.join(builtins)}), a template file, "
                          "or a model with a chat template.")
    return template


def with_chat_template(tokenizer, spec: str):
    """``tokenizer`` with the template ``spec`` names (unchanged when ``spec`` is empty). The template must render a
    conversation and write only tokens the tokenizer has: the model's embeddings are not grown for it."""
    if not spec:
        return tokenizer
    template = template_text(spec)
    unknown = sorted({m for m in _MARKER.findall(template)
                      if m not in tokenizer.get_vocab() and m not in tokenizer.all_special_tokens})
    if unknown:
        raise ConfigError(f"--chat_template {spec}: the template writes {', '.join(unknown)}, which this model's tokenizer "
                          "has no token for; choose a template written in the model's own special tokens.")
    from jinja2 import TemplateError

    previous, tokenizer.chat_template = tokenizer.chat_template, template
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                                      tokenize=False)
    except (TemplateError, ValueError) as err:
        tokenizer.chat_template = previous
        raise ConfigError(f"--chat_template {spec}: the template does not render a user/assistant conversation: "
                          f"{str(err).splitlines()[0]}") from None
    return tokenizer
