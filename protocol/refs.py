"""Git refs an `update` command may name: the one rule, checked by the service (a bad ref is refused with a 422
before anything is sent) and again by the agent (which never hands git anything else)."""

from __future__ import annotations

import re

# Not starting with `-` (git would read an option), no `..` (a range, or a path out of refs/).
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}$"
REF_RE = re.compile(REF_PATTERN)


def is_git_ref(value: object) -> bool:
    """A branch, tag or commit name: letters, digits and ._/@+-, not starting with - and without .."""
    return isinstance(value, str) and REF_RE.fullmatch(value) is not None and ".." not in value
