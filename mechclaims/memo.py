"""Per-process memos for work that several claims share (a forward pass read by many measurements)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


def remembered(store: OrderedDict, key: Hashable, make: Callable[[], T], kept: int) -> T:
    """store[key], made by make() on a miss; only the `kept` most recently used entries stay."""
    if key not in store:
        store[key] = make()
        while len(store) > kept:
            store.popitem(last=False)
    store.move_to_end(key)
    return store[key]


def source_key(source: Any, dataset: Any, *more: Hashable) -> tuple[Hashable, ...]:
    """A memo key for work on `source` over `dataset`: the source's name and fingerprint (a weight null has
    neither, so its identity), the data set's fingerprint, then `more` (the work's own parameters)."""
    return (getattr(source, "name", id(source)), getattr(source, "fingerprint", None), dataset.fingerprint, *more)
