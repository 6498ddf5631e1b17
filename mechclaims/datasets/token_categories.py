"""Words in semantic categories, one carrier sentence per word (Singh 2023's concept-space claim, SINGH-1).

Each file fixtures/token_categories/<category>.txt lists one category's words, one per line; categories are
taken in sorted file-name order. The text for a word is the carrier sentence "The word is <word>", so the word
is its last token with a leading space. Which words are single tokens is the model's business: the
measurement keeps, per model, the words its tokenizer makes one token (metadata: `category`, `word`).
"""

from __future__ import annotations

from mechclaims.datasets.base import Dataset, fixture_lines, fixtures_dir
from mechclaims.errors import MechclaimsError

NAME = "token_categories"
VERSION = "1"
FOLDER = "token_categories"
CARRIER = "The word is"
MIN_CATEGORIES = 10
MIN_WORDS = 12


def categories() -> dict[str, tuple[str, ...]]:
    """category -> its words, from fixtures/token_categories/*.txt; a word in two categories, a category with
    fewer than MIN_WORDS words, or fewer than MIN_CATEGORIES categories is a one-line error."""
    files = sorted((fixtures_dir() / FOLDER).glob("*.txt"))
    found = {path.stem: fixture_lines(f"{FOLDER}/{path.name}") for path in files}
    if len(found) < MIN_CATEGORIES:
        raise MechclaimsError(f"fixtures/{FOLDER} holds {len(found)} categories, fewer than {MIN_CATEGORIES}: "
                              "restore the category files")
    owner: dict[str, str] = {}
    for category, words in found.items():
        if len(set(words)) < MIN_WORDS:
            raise MechclaimsError(f"fixtures/{FOLDER}/{category}.txt lists {len(set(words))} distinct words, "
                                  f"fewer than {MIN_WORDS}: add words")
        for word in words:
            if owner.setdefault(word, category) != category:
                raise MechclaimsError(f"fixtures/{FOLDER}: {word!r} is in both {owner[word]} and {category}: "
                                      "keep it in one")
    return {category: tuple(dict.fromkeys(words)) for category, words in found.items()}


def build() -> Dataset:
    """One carrier sentence per word, categories in sorted order and words in file order."""
    rows = [{"category": category, "word": word} for category, words in categories().items() for word in words]
    return Dataset(
        name=NAME,
        version=VERSION,
        texts=tuple(f"{CARRIER} {row['word']}" for row in rows),
        provenance=f"fixtures/{FOLDER}: {len({r['category'] for r in rows})} categories, {len(rows)} words, each "
        f"in the carrier sentence {CARRIER!r} + word",
        metadata=tuple(rows),
    )
