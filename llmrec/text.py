"""The one text-normalisation module: ASCII folding, words, title forms in either article order.

Grounding, claims, title resolution and the chat rules all meet the catalog through these, so that a
title or a genre written by a user, by the model or by the catalog compares the same way everywhere:
- `fold`: accents dropped ("Misérables" → "Miserables");
- `words` / `normal`: the ASCII words of a text, and their lowercase join ("Misérables, Les" → "miserables les");
- `title_forms`: "Usual Suspects, The" ⇔ "The Usual Suspects", and "Postino, Il (The Postman)" under both names.
"""

from __future__ import annotations

import re
import unicodedata

ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "Lo", "Gli", "Das", "Der", "Die", "Det", "El", "Los", "O")
"""Leading articles a catalog may move to the end of a title ("Godfather, The")."""
WORD = re.compile(r"[0-9A-Za-z]+")
"""A word, after folding: what grounding and claims count as one token."""
ARTICLE_WORDS = frozenset(t.lower() for a in ARTICLES for t in WORD.findall(a))
_INVERTED = re.compile(r"^(.+), (" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_ALTERNATIVE = re.compile(r"^(.+?)\s*\(([^()]+)\)$")
_YEAR = re.compile(r"^(1[89]\d\d|20\d\d)$")


def fold(text: str) -> str:
    """Accents dropped ("Misérables" → "Miserables"), so a user's, the model's and the catalog's spellings meet."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The ASCII words of `text` as written (case kept): "Children's" → ["Children", "s"]."""
    return WORD.findall(fold(text))


def normal(text: str) -> str:
    """Lowercase ASCII words joined by one space: 'Misérables, Les' → 'miserables les', 'Sci-Fi' → 'sci fi'."""
    return " ".join(w.lower() for w in words(text))


def natural_title(title: str) -> str:
    """A catalog title in reading order: 'Usual Suspects, The' → 'The Usual Suspects' (other titles unchanged)."""
    inverted = _INVERTED.match(title)
    return f"{inverted.group(2)} {inverted.group(1)}" if inverted else title


def title_forms(title: str) -> set[str]:
    """The stored title, its main and alternative parts ('Postino, Il (The Postman)'), each in stored and natural order."""
    forms = {title}
    parts = _ALTERNATIVE.match(title)
    if parts and not _YEAR.match(parts.group(2)):
        forms |= {parts.group(1), parts.group(2)}
    return forms | {natural_title(form) for form in forms}
