"""The pattern of a log rule: a substring, or a regular expression checked when the rule is written.

Python's `re` backtracks, and a pattern such as `(a+)+$` takes exponential time on a line built to defeat it.
A rule's pattern is therefore capped at MAX_PATTERN characters, refused when it nests an unbounded repeat inside
another repeat or refers back to a group (the shapes that backtrack without end), and only the first MATCH_CHARS
characters of a line are searched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

MAX_PATTERN = 200
MATCH_CHARS = 1000


def check(pattern: str, regex: bool) -> str | None:
    """Why this pattern cannot be used, or None."""
    if len(pattern) > MAX_PATTERN:
        return f"pattern is longer than {MAX_PATTERN} characters"
    if not regex:
        return None
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"pattern is not a valid regular expression: {exc}"
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        return "pattern may not refer back to a group (\\1, (?P=name)): it can take exponential time"
    if _nested_repeat(pattern):
        return "pattern may not repeat a group that itself repeats, such as (a+)+: it can take exponential time"
    return None


def _nested_repeat(pattern: str) -> bool:
    """Whether a group containing a repeat (*, +, {n,}) is itself repeated."""
    stack: list[bool] = []  # per open group: does it contain a repeat?
    i, in_class, closed_repeating = 0, False, False
    while i < len(pattern):
        ch = pattern[i]
        follows_repeating_group, closed_repeating = closed_repeating, False
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif ch == "(":
            stack.append(False)
        elif ch == ")" and stack:
            inner = stack.pop()
            if stack and inner:
                stack[-1] = True
            closed_repeating = inner
        elif ch in "*+{":  # `?` repeats at most once: harmless
            if follows_repeating_group:
                return True
            if stack:
                stack[-1] = True
        i += 1
    return False


@lru_cache(maxsize=256)
def matcher(pattern: str, regex: bool) -> Callable[[str], bool]:
    """A test for one line (only its first MATCH_CHARS characters are looked at)."""
    if not pattern:
        return lambda _line: True
    if regex:
        search = re.compile(pattern).search
        return lambda line: search(line, 0, MATCH_CHARS) is not None
    return lambda line: pattern in line[:MATCH_CHARS]
