"""The ``posttrain`` command line: help pages and dispatch over the command table (posttrain/commands.py)."""

from __future__ import annotations

import shlex
import sys

from posttrain.commands import COMMANDS, INVOCATION, parse_flags
from posttrain.config import field_docs, field_kinds, field_ranges, load_config, section_docs


def print_help(name: str | None = None) -> None:
    if name is None:
        print("usage: posttrain COMMAND [--config FILE] [--key value ...]\n\ncommands:")
        for command, entry in COMMANDS.items():
            print(f"  {command:<10} {entry.summary}")
        print("\n`posttrain COMMAND --help` lists a command's options; dotted keys reach nested settings (--lora.r 8).")
        return
    entry = COMMANDS[name]
    head = f" [{' '.join(entry.positional.upper().split())}]" if entry.positional else ""
    print(f"usage: posttrain {name}{head} [--config FILE] [--key value ...]\n\n{entry.summary}\n\noptions:")
    from typing import Literal, get_args, get_origin

    from posttrain.config_aliases import names_of

    cls = entry.config()
    ranges, kinds, aliases = field_ranges(cls), field_kinds(cls), names_of(cls)
    sections, shown = section_docs(cls), set()
    for key, text, default in field_docs(cls):
        section = key.split(".")[0] if "." in key else None
        if section in sections and section not in shown:
            shown.add(section)
            print(f"  {section}: {sections[section]}")
        kind, metadata = kinds[key]
        valid = f"; {ranges[key]}" if key in ranges else ""
        if get_origin(kind) is Literal:
            valid += f"; one of {', '.join(map(str, get_args(kind)))}"
        also = f" [also {', '.join('--' + a for a in sorted(aliases[key], key=len))}]" if key in aliases else ""
        given = "(required)" if metadata.get("required") else f"(default: {default!r}{valid})"
        print(f"  --{key:<30} {text} {given}{also}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        print(f"posttrain: error: unknown command '{name}'." + (f" Did you mean '{close[0]}'?" if close else ""), file=sys.stderr)
        return 2
    if ("--help" in rest or "-h" in rest) and not COMMANDS[name].raw:
        print_help(name)
        return 0
    if COMMANDS[name].raw and (not rest or rest[0] in ("-h", "--help")):
        COMMANDS[name].run()(rest)  # its own usage, before the error table below (it imports torch) loads
        return 0
    from posttrain.errors import USER_ERRORS

    INVOCATION.set("posttrain " + shlex.join(argv))
    try:
        entry = COMMANDS[name]
        if entry.raw:
            entry.run()(rest)
            return 0
        config_file, overrides = parse_flags(rest, entry.positional)
        config = load_config(entry.config(), config_file, overrides)
        entry.run()(config)
    except USER_ERRORS as err:
        print(f"posttrain: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posttrain: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
