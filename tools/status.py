"""`tgsnap status`: the CLI over `snapshot.status.status` — what the storage holds, as a table or as JSON.

Reads what a restore plan reads (the manifest and the delta documents, never a snapshot part); writes
nothing and takes no lease, so it runs beside the live bot.
"""

from __future__ import annotations

import json
import sys

from snapshot.status import status
from tools.cli_common import EXIT_EMPTY, EXIT_FAILED, EXIT_OK, make_parser, open_backend, run, settings_from_args

PROG = "tgsnap status"
DESCRIPTION = """\
Show what the storage holds: the manifest, the writer's lease, the snapshot (age, size, parts), the delta
chain restore would apply (length, bytes, deltas found beyond the manifest), the newest durable state and
its age (lag), an estimated restore time, and the documents stored where the backend can count them.
Reads only. Exit 0 when restore would succeed, 1 when the manifest or the chain is at fault (named), 5
when the storage is empty. --json prints a stable object (status_format 1; keys are only ever added)."""
EXAMPLES = """\
  # a table for people
  tgsnap status --storage-dir ./data

  # the same as JSON, e.g. for a monitoring probe
  tgsnap status --storage-dir ./data --json | jq .lag_seconds
"""


def build_parser():
    parser = make_parser(PROG, DESCRIPTION, EXAMPLES)
    parser.add_argument("--json", action="store_true", help="print the status as one JSON object on stdout")
    parser.add_argument("--no-count", action="store_true",
                        help="do not list the storage to count its documents (large directories)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    async def body() -> int:
        settings = settings_from_args(args)
        backend = await open_backend(settings)
        try:
            st = await status(backend, settings.encryption_key, count_documents=not args.no_count)
        finally:
            await backend.close()
        if args.json:
            json.dump({"storage": settings.describe(), **st.to_json()}, sys.stdout, indent=2, allow_nan=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(st.table() + "\n")
            for note in st.notes:
                sys.stdout.write(f"note: {note}\n")
        if st.empty:
            return EXIT_EMPTY
        return EXIT_OK if st.ok else EXIT_FAILED

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
