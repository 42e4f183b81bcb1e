"""Reward functions: plain Python callables that score responses, called the way TRL's GRPOTrainer calls them,
so a TRL user's functions work unchanged with ``posttrain rlhf --reward-fn module:function``.

A reward function is called with keyword arguments, one list entry per response:

    prompts=         the prompts as the prompt file holds them (strings, or lists of messages)
    completions=     the responses: strings for plain-text prompts, ``[{"role": "assistant", "content": ...}]`` for
                     conversational ones
    completion_ids=  the responses' token ids
    trainer_state=   an object with ``global_step`` (the step being scored) and ``max_steps``
    every other column of the prompt rows, e.g. ``answer=``

and returns a list of floats. A function that takes ``**kwargs`` gets all of them; one that names its parameters
gets only those. ``--reward-fn`` names ``module:function`` (the current directory and PYTHONPATH are searched) or
``path/to/file.py:function``.

This module also holds the reward functions posttrain ships, e.g. ``posttrain.rewards:exact_answer``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

STANDARD_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state")


class RewardFunctionError(ValueError):
    """A reward function that cannot be loaded or that returned something unusable; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Reward functions that ship with posttrain
# ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def completion_text(completion: Any) -> str:
    """The text of a completion in either of TRL's forms (a string, or a list of messages)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if isinstance(m, dict))


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,250`` and ``-3.5`` included), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def exact_answer(prompts: list, completions: list, answer: list, **kwargs) -> list[float]:
    """1.0 where the last number in the response equals the row's ``answer`` (to 1e-6), else 0.0.

    For word problems whose answer is a number: the response may reason first, the final number counts.
    """
    rewards = []
    for completion, expected in zip(completions, answer, strict=True):
        got = last_number(completion_text(completion))
        target = float(str(expected).replace(",", ""))
        rewards.append(1.0 if got is not None and abs(got - target) <= 1e-6 * max(1.0, abs(target)) else 0.0)
    return rewards


def answer_format(prompts: list, completions: list, **kwargs) -> list[float]:
    """1.0 where the response ends with a number (an answer a checker can read), else 0.0."""
    return [1.0 if re.search(r"-?\d[\d,.]*\s*[.!]?\s*$", completion_text(c).strip()) else 0.0 for c in completions]


# ---------------------------------------------------------------------------------------------
# Loading and calling
# ---------------------------------------------------------------------------------------------


@dataclass
class RewardFunction:
    """A loaded reward function and what its signature asks for."""

    name: str
    spec: str
    fn: Callable[..., Any]
    takes_all: bool  # has **kwargs
    wants: tuple[str, ...]  # named keyword parameters
    requires: tuple[str, ...]  # named parameters without a default

    def check_columns(self, columns: set[str], source: str) -> None:
        """Fail before training when the function needs a column the prompt rows do not have."""
        missing = [name for name in self.requires if name not in STANDARD_ARGUMENTS and name not in columns]
        if missing:
            raise RewardFunctionError(
                f"reward function {self.spec} needs {', '.join(repr(m) for m in missing)}, which the rows of {source} do "
                f"not have (their columns: {', '.join(sorted(columns))}). Add the column to every row, or give the "
                "parameter a default.")

    def __call__(self, prompts: list, completions: list, completion_ids: list[list[int]], columns: dict[str, list],
                 step: int, max_steps: int) -> list[float]:
        kwargs = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids,
                  "trainer_state": SimpleNamespace(global_step=step, max_steps=max_steps), **columns}
        if not self.takes_all:
            kwargs = {k: v for k, v in kwargs.items() if k in self.wants}
        try:
            values = self.fn(**kwargs)
        except Exception as err:  # noqa: BLE001 - any failure of user code stops the run with its row
            raise RewardFunctionError(self._failure(kwargs, err)) from err
        return self._check(values, prompts, completions)

    def _failure(self, kwargs: dict[str, Any], err: Exception) -> str:
        # find the row that breaks it: call it on one response at a time
        n = len(kwargs.get("completions", kwargs.get("prompts", [])) or [])
        for i in range(n):
            row = {k: v if k == "trainer_state" else v[i:i + 1] for k, v in kwargs.items()}
            try:
                self.fn(**row)
            except Exception as row_err:  # noqa: BLE001
                return (f"reward function {self.spec} raised {type(row_err).__name__}: {row_err}\n"
                        f"  prompt: {_show(row.get('prompts', ['?'])[0])}\n  response: {_show(row.get('completions', ['?'])[0])}")
        return f"reward function {self.spec} raised {type(err).__name__}: {err} (on the whole batch; no single response fails)"

    def _check(self, values: Any, prompts: list, completions: list) -> list[float]:
        if hasattr(values, "tolist"):
            values = values.tolist()
        if not isinstance(values, (list, tuple)):
            raise RewardFunctionError(f"reward function {self.spec} returned {type(values).__name__}; it must return a "
                                      f"list of {len(completions)} floats, one per completion.")
        if len(values) != len(completions):
            raise RewardFunctionError(f"reward function {self.spec} returned {len(values)} values for {len(completions)} "
                                      "completions; it must return one float per completion.")
        out = []
        for i, value in enumerate(values):
            number = value if isinstance(value, (int, float)) else None
            if number is None or not math.isfinite(number):
                raise RewardFunctionError(
                    f"reward function {self.spec} returned {value!r} for completion {i + 1} of {len(values)}; every value "
                    f"must be a finite number.\n  prompt: {_show(prompts[i])}\n  response: {_show(completions[i])}")
            out.append(float(number))
        return out


def _show(value: Any, limit: int = 300) -> str:
    """A prompt or response for an error message: its text (the last turn's, for messages), shortened."""
    if isinstance(value, list):
        value = value[-1].get("content", "") if value and isinstance(value[-1], dict) else repr(value)
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def load_reward_function(spec: str) -> RewardFunction:
    """``module:function`` or ``path/to/file.py:function`` -> the function, its signature checked."""
    target, sep, name = spec.strip().rpartition(":")
    if not sep or not target or not name:
        raise RewardFunctionError(f"--reward-fn {spec!r}: expected module:function or path/to/file.py:function.")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise RewardFunctionError(f"--reward-fn {spec!r}: no such file {path}.")
        module_spec = importlib.util.spec_from_file_location(f"posttrain_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file failed to import
            raise RewardFunctionError(f"--reward-fn {spec!r}: importing {path} failed: {type(err).__name__}: {err}") from None
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # the current directory, as `python -m` would search it
        try:
            module = importlib.import_module(target)
        except Exception as err:  # noqa: BLE001 - not found, or its import raised
            raise RewardFunctionError(f"--reward-fn {spec!r}: cannot import module {target!r} ({type(err).__name__}: {err}). "
                                      "It is looked up in the current directory and on PYTHONPATH; or pass "
                                      "path/to/file.py:function.") from None
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise RewardFunctionError(f"--reward-fn {spec!r}: {target} has no function {name!r} (it has: {', '.join(found[:12])}).")
    if not callable(fn):
        raise RewardFunctionError(f"--reward-fn {spec!r}: {name} is a {type(fn).__name__}, not a function.")
    return inspect_reward_function(fn, spec, name)


def inspect_reward_function(fn: Callable[..., Any], spec: str, name: str | None = None) -> RewardFunction:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        raise RewardFunctionError(f"--reward-fn {spec!r}: cannot read the signature of {fn!r}.") from None
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
    positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional_only:
        raise RewardFunctionError(f"--reward-fn {spec!r}: reward functions are called with keyword arguments only "
                                  f"(prompts=, completions=, ...); {name or fn.__name__} takes positional-only parameters.")
    wants = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    if "completions" not in wants and not takes_all:
        raise RewardFunctionError(f"--reward-fn {spec!r}: {name or fn.__name__}{inspect.signature(fn)} does not take "
                                  "`completions`; a reward function is called as fn(prompts=..., completions=..., **columns) "
                                  "and should accept **kwargs.")
    requires = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty)
    return RewardFunction(name or getattr(fn, "__name__", "reward"), spec, fn, takes_all, wants, requires)
