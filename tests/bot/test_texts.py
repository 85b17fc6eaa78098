"""The clicker's words: the article's texts, and long ratings split without losing a character."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot import texts


def test_article_texts():
    assert texts.greeting("Алиса") == "Приветствую Алиса"
    assert texts.clicks(3) == "Кликов: 3"
    assert texts.NOT_REGISTERED == "Вы не зарегистрированы"
    assert texts.rating(2, [("a", 5), ("b", 1)]) == "Всего: 2\n1: a - 5\n2: b - 1"


def test_short_text_is_one_message():
    assert texts.split_message("Всего: 1\n1: a - 1") == ["Всего: 1\n1: a - 1"]
    assert texts.split_message("") == [""]


def units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60), min_size=1, max_size=30),
       st.integers(8, 100))
def test_split_keeps_every_character_and_fits_the_limit(lines, limit):
    text = "\n".join(lines)
    chunks = texts.split_message(text, limit)
    assert all(units(c) <= limit for c in chunks)
    # Chunks end at line breaks, or inside a line too long for one message: put them back together.
    rebuilt = chunks[0]
    for chunk in chunks[1:]:
        rebuilt += ("\n" if text.startswith(rebuilt + "\n") else "") + chunk
    assert rebuilt == text


def test_split_never_cuts_a_surrogate_pair():
    text = "🙂" * 10
    chunks = texts.split_message(text, 5)
    assert "".join(chunks) == text
    assert all(units(c) <= 5 for c in chunks)
