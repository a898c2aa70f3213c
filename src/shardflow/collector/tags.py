"""Tags and tag patterns, as in fluentd and Puree.

A tag is a dot-separated name such as ``app.click`` or ``web.request.slow``: one or more
non-empty parts, none of which is a wildcard. A pattern selects tags:

- literal parts match themselves: ``app.click`` matches only ``app.click``;
- ``*`` matches exactly one part: ``app.*`` matches ``app.click`` but neither ``app``
  nor ``app.click.left``;
- ``**`` matches zero or more parts: ``app.**`` matches ``app``, ``app.click`` and
  ``app.click.left``; ``**`` alone matches every tag.

Wildcards come last: once a pattern has a wildcard part, every later part is a wildcard,
and ``**`` can only be the final part (``app.*.**`` means "one or more parts after app").
Anything else (``a.*.b``, ``a.**.*``, ``a*``, empty parts) is a ``ValueError`` that says
what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TagPattern", "validate_tag"]

ONE = "*"
ANY = "**"


def validate_tag(tag: object) -> str:
    """Return ``tag`` if it is a valid tag; raise TypeError or ValueError saying why not."""
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a str, got {type(tag).__name__}")
    if not tag:
        raise ValueError("tag must not be empty")
    for part in tag.split("."):
        if not part:
            raise ValueError(f"invalid tag {tag!r}: empty part (leading, trailing or '..')")
        if "*" in part:
            raise ValueError(f"invalid tag {tag!r}: '*' is only allowed in patterns")
        if part != part.strip():
            raise ValueError(f"invalid tag {tag!r}: parts must not start or end with spaces")
    return tag


@dataclass(frozen=True, slots=True)
class TagPattern:
    """A compiled tag pattern; ``TagPattern("app.**").matches("app.click")`` is True."""

    pattern: str
    _literal: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _ones: int = field(init=False, repr=False, compare=False)
    _rest: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = self.pattern
        if not isinstance(pattern, str):
            raise TypeError(f"tag pattern must be a str, got {type(pattern).__name__}")
        if not pattern:
            raise ValueError("tag pattern must not be empty (use '**' to match every tag)")
        literal: list[str] = []
        ones = 0
        rest = False
        for part in pattern.split("."):
            if rest:
                raise ValueError(
                    f"invalid tag pattern {pattern!r}: '**' must be the last part"
                )
            if not part:
                raise ValueError(
                    f"invalid tag pattern {pattern!r}: empty part (leading, trailing or '..')"
                )
            if part == ANY:
                rest = True
            elif part == ONE:
                ones += 1
            elif "*" in part:
                raise ValueError(
                    f"invalid tag pattern {pattern!r}: {part!r} mixes '*' with text; "
                    "a wildcard must be a whole part ('*' or '**')"
                )
            elif ones:
                raise ValueError(
                    f"invalid tag pattern {pattern!r}: wildcards must come last "
                    f"(literal part {part!r} after '*')"
                )
            elif part != part.strip():
                raise ValueError(
                    f"invalid tag pattern {pattern!r}: parts must not start or end with spaces"
                )
            else:
                literal.append(part)
        object.__setattr__(self, "_literal", tuple(literal))
        object.__setattr__(self, "_ones", ones)
        object.__setattr__(self, "_rest", rest)

    def matches(self, tag: str) -> bool:
        """True if ``tag`` (assumed valid, see :func:`validate_tag`) matches this pattern."""
        parts = tag.split(".")
        fixed = len(self._literal) + self._ones
        if len(parts) < fixed or (not self._rest and len(parts) != fixed):
            return False
        return tuple(parts[: len(self._literal)]) == self._literal

    def __str__(self) -> str:
        return self.pattern
