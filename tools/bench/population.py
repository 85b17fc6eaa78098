"""The synthetic clicker population every measure runs on: same seed, same rows, for both methods.

Shaped like the article's bot: `chatid` a random 9–10 digit Telegram chat id, `name` a first name
(Cyrillic and Latin, as users of a Russian bot have), `click` heavy-tailed (most users click a few times,
a few click a lot), `state` 0 as in the article.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator

#: The article's columns with the primary key the article lacks (tgsnap needs one to key deltas).
USERS_DDL = (
    "CREATE TABLE users (chatid INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "click INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL DEFAULT 0)"
)

_CYRILLIC = (
    "Александр Алексей Анастасия Анна Андрей Артём Валерия Виктория Владимир Дарья Дмитрий Евгений Екатерина "
    "Елена Иван Игорь Илья Кирилл Ксения Максим Мария Михаил Наталья Никита Олег Ольга Павел Полина Роман "
    "Светлана Сергей Софья Татьяна Юлия Ярослав Тимофей Вероника Глеб Алиса Егор"
).split()
_LATIN = (
    "Alex Anna Ben Chloe Daniel David Elena Emma Ethan Hannah Isabella Jack James Julia Kate Leo Liam Lucas "
    "Maria Max Mia Noah Oliver Olivia Paul Sam Sara Sofia Tom Victor William Zoe Ivan Nikita Dmitry Olga"
).split()


def users(n: int, seed: int) -> Iterator[tuple[int, str, int, int]]:
    """`n` distinct users, deterministic for a seed: (chatid, name, click, state)."""
    rng = random.Random(seed)
    seen: set[int] = set()
    while len(seen) < n:
        chatid = rng.randrange(100_000_000, 10_000_000_000)  # 9 or 10 digits
        if chatid in seen:
            continue
        seen.add(chatid)
        # 65 % Cyrillic names; some users add a surname initial or a digit, as real first names vary
        base = rng.choice(_CYRILLIC) if rng.random() < 0.65 else rng.choice(_LATIN)
        r = rng.random()
        name = f"{base} {rng.choice(_CYRILLIC if base in _CYRILLIC else _LATIN)[0]}." if r < 0.2 else (
            f"{base}{rng.randrange(100)}" if r < 0.3 else base)
        # Pareto(alpha=1.1): median ~1 click, a long tail up to millions
        click = min(int(rng.paretovariate(1.1)) - 1, 10_000_000)
        yield chatid, name, click, 0


def populate(conn: sqlite3.Connection, n: int, seed: int) -> None:
    conn.execute(USERS_DDL)
    conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", users(n, seed))
    conn.commit()


def memory_db(n: int, seed: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    populate(conn, n, seed)
    return conn
