"""Who the simulated users are and how often each clicks.

Names mix Cyrillic and Latin first names with hostile ones (quotes, SQL, HTML, emoji, right-to-left
text, 64+ characters), so every load run also checks that names survive. Clicks follow a Zipf law:
a few users click a lot, most rarely, like a real clicker's population.
"""

from __future__ import annotations

import bisect
import itertools
import random

FIRST_NAMES = ["Алиса", "Борис", "Вера", "Глеб", "Дарья", "Егор", "Жанна", "Зоя", "Игорь", "Ксения",
               "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
HOSTILE_NAMES = [
    "O'Brien",
    "'); DROP TABLE users;--",
    '"quoted" \\ back\\slash',
    "<b>x</b> &amp; <i>y</i>",
    "🙂👩‍💻🇺🇦",
    "مرحبا بالعالم",
    "שָׁלוֹם",
    "N" * 70,
    "%s %d {0} {name}",
]


def names(count: int, seed: int = 0) -> list[str]:
    """`count` display names; every tenth is hostile, the rest ordinary and numbered to stay distinct."""
    rng = random.Random(seed)
    hostile = itertools.cycle(HOSTILE_NAMES)
    out = []
    for i in range(count):
        out.append(next(hostile) if i % 10 == 9 else f"{rng.choice(FIRST_NAMES)} {i}")
    return out


class Zipf:
    """Draws user indexes 0..n-1 with probability proportional to 1 / (rank + 1) ** s."""

    def __init__(self, n: int, s: float = 1.1, seed: int = 0):
        if n < 1:
            raise ValueError("a population needs at least one user")
        self.rng = random.Random(seed)
        weights = [1.0 / (rank + 1) ** s for rank in range(n)]
        self.cumulative = list(itertools.accumulate(weights))
        # Rank order is shuffled so the heaviest clicker is not always the first user created.
        self.order = list(range(n))
        self.rng.shuffle(self.order)

    def draw(self) -> int:
        point = self.rng.random() * self.cumulative[-1]
        return self.order[bisect.bisect_left(self.cumulative, point)]
