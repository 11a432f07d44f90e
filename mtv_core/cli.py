"""Command line: ``python -m mtv_core {demo,animate,extract-adapter} ...``.

Each sub-command lives in its own module and registers itself through ``add_parser``. Bad input (a
missing, broken or hostile file, a value out of range, an unwritable output) ends the command with exit
code 2 and one line naming the file or value and the problem; output is checked before any model is loaded.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from .errors import InputError, log_input_error

COMMANDS = ("demo", "animate", "extract_adapter")  # modules under mtv_core.commands; each has add_parser(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtv_core", description="MTVCrafter core command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as exc:  # bad input: exit code 2 and one line, never a traceback
        log_input_error(exc)
        return 2
