"""`tgsnap`: one command for the operator, with a subcommand per tool.

Each subcommand is the tool's own module (`tools.verify`, `tools.compact`, ...): `tgsnap verify ARGS` is
`python -m tools.verify ARGS` (that form keeps working), with help and messages naming it `tgsnap verify`.
The table `COMMANDS` is explicit registration — a command exists because it is listed here, never
because a module was imported — and a command whose module is absent from this build (`follow` and
`move` come with their own work) is left out of `--help` rather than offered and then failing.

Arguments are parsed twice on purpose: first here, with the subcommand's own parser renamed, so that
`--help` and usage errors say `tgsnap verify`; then by the module's `main`, which owns the checks made
after parsing. Both parse the same list with the same parser, so they cannot disagree.

docs/cli.md is generated from these parsers (`python -m tools.cli --write-docs`); tests/tools/test_cli_docs.py
fails when the two differ.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.cli_common import invoked_as


@dataclass(frozen=True)
class Command:
    name: str
    #: the module holding the parser and `main(argv) -> int`.
    module: str
    summary: str
    #: the module's parser factory (most are `build_parser`).
    parser_attr: str = "build_parser"
    #: examples for modules whose own parser has no epilog.
    examples: str = ""

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def load(self):
        return importlib.import_module(self.module)

    def parser(self) -> argparse.ArgumentParser:
        parser = getattr(self.load(), self.parser_attr)()
        parser.prog = f"tgsnap {self.name}"
        if self.examples and not parser.epilog:
            parser.epilog = f"examples:\n{self.examples}"
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
        return parser

    def main(self) -> Callable[[list[str]], int]:
        return self.load().main


COMMANDS: list[Command] = [
    Command("status", "tools.status", "what the storage holds: snapshot, chain, writer, lag, restore estimate"),
    Command("verify", "tools.verify", "check every document the manifest depends on; name each one at fault"),
    Command("compact", "tools.compact", "fold the delta chain into a new snapshot (takes the writer lease)"),
    Command("prune", "tools.prune", "let go of retained older snapshots beyond a policy (takes the writer "
                                    "lease); --dry-run lists what would go"),
    Command("export", "tools.export", "the state (latest or at a point in time) as SQLite, JSON lines or "
                                      "into PostgreSQL"),
    Command("restore", "tools.restore", "the exact stored database (internal tables included) as a local "
                                        "SQLite file; --dry-run prints the plan"),
    Command("follow", "tools.follow", "follow the storage chain into PostgreSQL"),
    Command("move", "tools.move", "move the storage to another backend"),
    Command("bench", "tools.bench.__main__", "measure tgsnap against the article's method (ratios)"),
    Command("emulator", "tools.emulator.__main__", "run the local Telegram emulator (Bot API + MTProto)",
            examples="""\
  # a world in ./data/emulator with a demo bot, storage channel and user; print them as JSON
  tgsnap emulator --data ./data/emulator --demo --json

  # faults on purpose: 100 ms per request, one HTTP 500 on the next sendDocument
  tgsnap emulator --data ./w --latency-ms 100 --fault server_error,method=sendDocument,count=1
"""),
    Command("loadgen", "tools.loadgen", "drive simulated users against the clicker bot and report latencies",
            parser_attr="parser", examples="""\
  # 50 simulated users, 40 messages/s for 20 s against a bot started for the run; check every reply
  tgsnap loadgen --users 50 --rate 40 --duration 20 --verify
"""),
]


def available_commands() -> list[Command]:
    return [c for c in COMMANDS if c.available()]


EPILOG = """\
examples:
  tgsnap status --storage-dir ./data
  tgsnap verify --storage-dir ./data --verbose
  tgsnap export --storage-dir ./data --at-seq 1200 --to at-1200.sqlite
  tgsnap compact --storage-dir ./data --dry-run
  tgsnap COMMAND --help

Every command also runs as `python -m tools.COMMAND`. Storage flags and TGSNAP_* variables are the same
for every command and for the bot; exit codes: 0 ok, 1 data at fault, 2 bad configuration, 3 storage
busy, 4 storage unreachable, 5 storage empty, 130 interrupted (docs/operations.md)."""


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: for `--help` and the docs. Dispatch itself is in `main`."""
    commands = available_commands() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="tgsnap", description="Look after tgsnap storage: status, verify, compact, prune, export, restore, "
                                   "and the developer tools.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for c in commands:
        sub.add_parser(c.name, help=c.summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--write-docs"]:
        return write_docs(Path(argv[1]) if len(argv) > 1 else DOCS)
    commands = {c.name: c for c in available_commands()}
    if not argv or argv[0] not in commands:
        parser = build_parser(list(commands.values()))
        if not argv or argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0 if argv else 2
        known = {c.name for c in COMMANDS}
        hint = " (not part of this build)" if argv[0] in known else ""
        parser.error(f"unknown command {argv[0]!r}{hint}; choose from {', '.join(commands)}")
    cmd, rest = commands[argv[0]], argv[1:]
    cmd.parser().parse_args(rest)  # --help and usage errors, under the name `tgsnap NAME`
    with invoked_as(f"tgsnap {cmd.name}"):
        return cmd.main()(rest)


# -- the reference in docs/cli.md, generated from the parsers ----------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED by `python -m tools.cli --write-docs`; tests/tools/test_cli_docs.py keeps it true -->"
END = "<!-- END GENERATED -->"
#: help is rendered at a fixed width so the reference does not depend on the terminal.
WIDTH = "100"


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help().rstrip() + "\n"
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def reference(commands: Sequence[Command] | None = None) -> str:
    """The generated part of docs/cli.md: `tgsnap --help`, then every subcommand's `--help`."""
    commands = available_commands() if commands is None else commands
    out = ["## tgsnap", "", "```", _help(build_parser(commands)).rstrip(), "```", ""]
    for c in commands:
        out += [f"## tgsnap {c.name}", "", "```", _help(c.parser()).rstrip(), "```", ""]
    return "\n".join(out)


def render_docs(current: str) -> str:
    """`current` with the generated block replaced by the reference of this build."""
    if BEGIN not in current or END not in current:
        raise SystemExit(f"docs/cli.md lacks the {BEGIN!r} ... {END!r} markers")
    head, rest = current.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{reference()}{END}{tail}"


def write_docs(path: Path = DOCS) -> int:
    path.write_text(render_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"wrote the command reference into {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
