"""Per-process memos for work that several claims share (a forward pass read by many measurements)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


def remembered(store: OrderedDict, key: Hashable, make: Callable[[], T], kept: int) -> T:
    """store[key], made by make() on a miss; only the `kept` most recently used entries stay."""
    if key not in store:
        store[key] = make()
        while len(store) > kept:
            store.popitem(last=False)
    store.move_to_end(key)
    return store[key]
