"""Every word the clicker says, in one place. User-facing texts are the article's, verbatim."""

from __future__ import annotations

from collections.abc import Iterable

from core import StoreStats

CLICK_BUTTON = "Клик"
RATING_BUTTON = "Рейтинг"

NOT_REGISTERED = "Вы не зарегистрированы"
#: not in the article (its bot stayed silent); a registered user who types something else gets the buttons back.
USE_BUTTONS = f"Нажмите «{CLICK_BUTTON}» или «{RATING_BUTTON}»"

#: the bot's command menu: only /start (admin commands stay unadvertised).
START_DESCRIPTION = "Регистрация"

#: the rating shows this many users, like the article.
RATING_SIZE = 15

#: Telegram rejects messages longer than this many UTF-16 code units.
MESSAGE_LIMIT = 4096


def greeting(name: str) -> str:
    return f"Приветствую {name}"


def clicks(count: int) -> str:
    return f"Кликов: {count}"


def rating(total: int, top: Iterable[tuple[str, int]]) -> str:
    lines = [f"Всего: {total}"]
    lines += [f"{place}: {name} - {count}" for place, (name, count) in enumerate(top, start=1)]
    return "\n".join(lines)


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Cut `text` into messages Telegram accepts, at line breaks where possible, never changing a character.

    Names are stored exactly and may be long; a rating of 15 long names must still arrive whole.
    """
    chunks: list[str] = []
    current: str | None = None
    for line in text.split("\n"):
        candidate = line if current is None else f"{current}\n{line}"
        if _units(candidate) <= limit:
            current = candidate
            continue
        if current is not None:
            chunks.append(current)
        while _units(line) > limit:
            cut = _cut_point(line, limit)
            chunks.append(line[:cut])
            line = line[cut:]
        current = line
    if current is not None:
        chunks.append(current)
    return chunks


def _units(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts (a lone surrogate counts one, not an error)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _cut_point(line: str, limit: int) -> int:
    """The longest prefix of `line` within `limit` UTF-16 units (never splitting a surrogate pair)."""
    units = 0
    for index, char in enumerate(line):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return max(index, 1)
    return len(line)


# --- admin ----------------------------------------------------------------------------------------

FLUSH_DONE = "Сохранено: все изменения в хранилище"
SNAPSHOT_DONE = "Снимок сохранён"


def failed(action: str, error: BaseException) -> str:
    return f"{action}: ошибка {type(error).__name__}: {error}"


def status(stats: StoreStats, storage: str, now: float) -> str:
    """/status: what an operator needs to judge durability at a glance."""
    rows = ", ".join(f"{table} {count}" for table, count in sorted(stats.rows.items())) or "нет таблиц"
    if stats.last_flush_at is None:
        flushed = "ещё не было"
    else:
        flushed = f"{_duration(now - stats.last_flush_at)} назад"
    if stats.snapshot_age is None:
        snapshot = "ещё нет"
    else:
        snapshot = f"{_duration(stats.snapshot_age)} назад, {size(stats.snapshot_size or 0)}"
    lines = [
        f"Хранилище: {storage}",
        f"Эпоха писателя: {stats.epoch}",
        f"Строк: {sum(stats.rows.values())} ({rows})",
        f"Несохранённых строк: {stats.dirty_rows}, в отправке: {stats.in_flight_rows}",
        f"Последнее сохранение: {flushed}, отставание {_duration(stats.lag)}",
        f"Снимок: {snapshot}",
        f"Дельт после снимка: {stats.deltas_since_snapshot}, последняя №{stats.last_seq}",
        f"Отправлено с запуска: {size(stats.bytes_shipped)}",
    ]
    if stats.last_error:
        lines.append(f"Ошибка хранилища: {stats.last_error}")
    if stats.fenced:
        lines.append("Запись остановлена: хранилище перешло к другому процессу")
    if stats.closed:
        lines.append("Хранилище закрыто")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} с"
    if seconds < 3600:
        return f"{seconds / 60:.1f} мин"
    return f"{seconds / 3600:.1f} ч"


def size(size: int) -> str:
    value = float(size)
    for unit in ("Б", "КБ", "МБ"):
        if value < 1024 or unit == "МБ":
            return f"{value:.0f} {unit}" if unit == "Б" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
