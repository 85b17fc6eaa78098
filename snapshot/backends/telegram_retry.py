"""One retry loop for every Telegram call both backends make.

Each backend supplies a `classify` function that turns its library's exceptions (aiogram's, Telethon's)
into a `BackendError` saying whether to try again and after how long; this module decides when to:

- a flood answer (429 / FLOOD_WAIT) pauses the chat's budget and is retried while the caller's deadline
  allows; past it the caller gets the retryable error with `retry_after`;
- a transient failure (timeout, dropped connection, 5xx) is retried a few times with backoff;
- anything else (no rights, wrong chat, ...) is raised at once, with the message that says what to fix.

Calls that send or edit are not idempotent on the Bot API: a retry after a lost answer may post the same
document twice. That is harmless by design (documents are immutable and the replica tolerates duplicates);
MTProto sends carry a `random_id` that Telegram uses to drop such repeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from snapshot.backends.telegram_budget import ChatBudget
from snapshot.errors import BackendError, TgsnapError

T = TypeVar("T")
#: a library exception → BackendError (retry or not), another TgsnapError (ConfigError: raised at once,
#: e.g. a refused bot token), or None (not a Telegram failure: re-raised as it is).
Classify = Callable[[BaseException], TgsnapError | None]


@dataclass(frozen=True)
class RetryPolicy:
    #: transient failures tried this many times in all before giving up.
    attempts: int = 4
    #: first backoff after a transient failure, doubled each time, seconds.
    backoff: float = 0.5
    #: one call (one HTTP request / one RPC) is abandoned after this long, seconds ...
    timeout: float = 60.0
    #: ... plus one second per this many bytes it moves (a 20 MB document on a slow link takes a while).
    min_rate: float = 256 * 1024

    def timeout_for(self, nbytes: int) -> float:
        return self.timeout + nbytes / self.min_rate
    #: total time a call may spend waiting for the budget, flood pauses and backoff, seconds.
    max_wait: float = 60.0


async def call(op: Callable[[], Awaitable[T]], *, what: str, classify: Classify, policy: RetryPolicy,
               budget: ChatBudget | None = None, attempt_timeout: float | None = None,
               edit_of: object | None = None) -> T:
    """Run `op` under `budget` (when given), retrying per `policy`; raise a BackendError naming `what`.

    `attempt_timeout` (default `policy.timeout`) bounds one attempt; 0 means the op bounds itself.
    `edit_of` (a message id) makes each attempt also take a slot of that message's edit bound."""
    timeout = policy.timeout if attempt_timeout is None else attempt_timeout
    deadline = time.monotonic() + policy.max_wait
    failures = 0
    while True:
        if budget is not None:
            await budget.acquire(max(0.0, deadline - time.monotonic()), edit_of=edit_of)
        try:
            return await (asyncio.wait_for(op(), timeout) if timeout > 0 else op())
        except Exception as exc:
            err: BackendError | None
            if isinstance(exc, BackendError):
                err = exc  # raised by the op itself: already says what and whether to retry
            elif isinstance(exc, TimeoutError):
                err = BackendError(f"no answer from Telegram within {timeout:g}s", retryable=True)
            else:
                classified = classify(exc)
                if classified is None:
                    raise
                if not isinstance(classified, BackendError):
                    raise classified from exc
                err = classified
            if not err.retryable:
                if err is exc:
                    raise
                raise err from exc
            if err.retry_after is not None:
                if budget is not None:
                    budget.pause(err.retry_after)  # the whole chat waits, not just us
                delay = err.retry_after
            else:
                failures += 1
                if failures >= policy.attempts:
                    raise BackendError(f"{what}: {err} (gave up after {failures} attempts)",
                                       retryable=True, retry_after=policy.backoff * 2 ** failures) from exc
                delay = policy.backoff * 2 ** (failures - 1)
            remaining = deadline - time.monotonic()
            if delay > remaining:
                raise BackendError(f"{what}: {err}", retryable=True, retry_after=delay) from exc
            if budget is None or err.retry_after is None:
                await asyncio.sleep(delay)
            # with a budget, a flood pause is slept inside budget.acquire on the next turn
