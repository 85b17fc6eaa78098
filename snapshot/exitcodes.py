"""The exit codes of the bot and of every operator tool: one table, so a deploy script or a supervisor
reads the same number the same way whichever program it started. docs/configuration.md embeds the table
(`python -m snapshot.exitcodes` prints it; tests/bot/test_config.py keeps the two equal)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # data at fault: verification failed, a restore could not be built (named in the message)
EXIT_CONFIG = 2  # bad flags or configuration (the message names the flag or variable)
EXIT_BUSY = 3  # a live writer holds the storage lease, or another writer took the storage over
EXIT_BACKEND = 4  # storage unreachable or refused the operation
EXIT_EMPTY = 5  # no storage there: the directory does not exist, or the storage holds nothing
EXIT_INTERRUPTED = 130

#: (code, short meaning for --help, meaning, what to do) for every code.
EXIT_CODES = [
    (EXIT_OK, "ok", "done (verify: every check passed; status: restore would succeed); the bot: stopped by "
                    "SIGTERM/SIGINT after the final flush", ""),
    (EXIT_FAILED, "data at fault", "data at fault: verify found a fault, or a restore could not be built "
                                   "(corrupt document, chain gap, point in time before the snapshot); the bot: "
                                   "its storage holds data that failed verification",
     "read the message: it names the document; see docs/operations.md, \"When verify fails\""),
    (EXIT_CONFIG, "bad configuration", "bad flags or configuration: a malformed or missing token or key, a wrong "
                                       "encryption key, a `.env` that is not text, a path naming a file, a "
                                       "negative `--at-seq`, an output file that exists",
     "fix the flag or variable named in the message"),
    (EXIT_BUSY, "storage busy (live writer)", "storage busy: another live writer holds the lease (at start), "
                                              "or another writer took the storage over",
     "stop the other writer, or wait (`compact --wait SECONDS`, the bot's `--takeover-wait`); the message "
     "names the holder and when its lease expires"),
    (EXIT_BACKEND, "storage unreachable", "storage unreachable or refusing (network, Telegram outage, 429 "
                                          "beyond patience)", "retry later; nothing was changed"),
    (EXIT_EMPTY, "no storage there (missing or empty)", "no storage there: the directory does not exist, or "
                                                        "the storage is empty (the bot: outside first-run "
                                                        "local mode, a storage directory that does not exist)",
     "check `--storage-dir` / `TGSNAP_STORAGE_DIR` / `TGSNAP_STORAGE_CHAT`: an empty result is never "
     "reported as success"),
    (EXIT_INTERRUPTED, "interrupted", "interrupted (Ctrl-C); the bot: before it was up, with nothing to save yet",
     "compact leaves the previous snapshot fully usable"),
]


def markdown_table() -> str:
    rows = ["| code | meaning | what to do |", "| --- | --- | --- |"]
    rows += [f"| {code} | {meaning} | {todo} |" for code, _short, meaning, todo in EXIT_CODES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
