"""Unit tags: the one rule for what a tag is, shared by the service's API, its command line and its queries.

Tags group units for config defaults and rollouts; an operator types them, so the rule is short and printable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$"
TAG_RE = re.compile(TAG_PATTERN)
TAG_RULE = "letters, digits and _.:=- only, at most 64 characters"
MAX_TAGS = 32  # per unit


def is_tag(value: object) -> bool:
    return isinstance(value, str) and TAG_RE.fullmatch(value) is not None


def check_tags(tags: Iterable[object]) -> list[str]:
    """A unit's tags, sorted and without repeats; ValueError (the message is for the caller) when one is bad."""
    given = list(tags)
    good = [t for t in given if isinstance(t, str) and is_tag(t)]
    if len(good) != len(given):
        raise ValueError(f"invalid tag(s) {[t for t in given if t not in good]!r}: {TAG_RULE}")
    if len(good) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per unit")
    return sorted(set(good))
