"""`python -m tools.move`: copy the current storage into a fresh channel (or directory), verified.

A thin CLI over `snapshot.move.move`. The source is the storage the usual settings name (TGSNAP_* / .env /
the storage flags, as for the bot); the target is the same kind of storage at `--to-chat` (a new channel
the same storage bot administers) or `--to-dir`. The bot is switched by configuration afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from snapshot.errors import StorageBusy
from snapshot.formatting import size_text
from snapshot.move import move
from tools.cli_common import EXIT_CONFIG, EXIT_OK, ProgressPrinter, make_parser, open_backend, run, settings_from_args

PROG = "tgsnap-move"
DESCRIPTION = """\
Move the storage to a fresh, empty channel (a banned or lost channel, or one grown too old): take the
writer lease on the current storage (refuses, exit 3, while a live writer such as the bot holds it;
--wait waits), restore its state, write it into the target as its first snapshot, restore the target
and compare, release. The source is left untouched. Then point the bot at the target
(TGSNAP_STORAGE_CHAT) and start it."""
EXAMPLES = """\
  # stop the bot, then copy the storage channel into a new one the same storage bot administers
  TGSNAP_STORAGE_CHAT=-1001111111111 TGSNAP_BOT_TOKEN=... python -m tools.move --to-chat -1002222222222

  # a local directory into another
  python -m tools.move --storage-dir ./data/storage --to-dir ./data/storage-new
"""


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    target = parser.add_argument_group("target (exactly one)")
    target.add_argument("--to-chat", metavar="CHAT", help="the new storage channel: -100… id or @username")
    target.add_argument("--to-dir", type=Path, metavar="DIR", help="the new local storage directory")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for a live writer's lease on the source (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.to_chat is None) == (args.to_dir is None):
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{PROG}: give exactly one of --to-chat and --to-dir\n")
        return EXIT_CONFIG
    if args.wait < 0:
        parser.error("--wait must not be negative")

    async def body() -> int:
        settings = settings_from_args(args)
        if args.to_dir is not None:
            args.to_dir.mkdir(parents=True, exist_ok=True)
            target_settings = dataclasses.replace(settings, mode="local", local_dir=args.to_dir)
        else:
            if settings.mode == "local":
                sys.stderr.write(f"{PROG}: --to-chat needs Telegram storage settings (a bot token, the mode)\n")
                return EXIT_CONFIG
            target_settings = dataclasses.replace(settings, storage_chat=args.to_chat)
        source = await open_backend(settings)
        try:
            target = await open_backend(target_settings, writes=True)
            try:
                result = await move(source, target, settings.encryption_key, wait=args.wait,
                                    progress=ProgressPrinter(quiet=args.quiet))
            except StorageBusy as exc:
                raise StorageBusy(f"{exc} (stop the bot first, or --wait SECONDS)") from None
            finally:
                await target.close()
        finally:
            await source.close()
        where = f"TGSNAP_STORAGE_CHAT={args.to_chat}" if args.to_chat else f"TGSNAP_STORAGE_DIR={args.to_dir}"
        text = (f"moved {result.rows} row(s) in {result.tables} table(s) at seq {result.seq} from {result.source} "
                f"to {result.target} ({result.parts} part(s), {size_text(result.size)}, verified) in "
                f"{result.seconds:.1f} s\nnow set {where} and start the bot; the old storage was left as it was")
        sys.stdout.write((json.dumps(result.as_dict(), indent=2) if args.json else text) + "\n")
        return EXIT_OK

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
