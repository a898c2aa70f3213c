from __future__ import annotations

import re

import pytest

from shardflow.collector import TagPattern, validate_tag


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("app.click", "app.click", True),
        ("app.click", "app.view", False),
        ("app.click", "app", False),
        ("app.click", "app.click.left", False),
        ("app", "app", True),
        ("app", "application", False),
        ("app.*", "app.click", True),
        ("app.*", "app", False),
        ("app.*", "app.click.left", False),
        ("app.*", "web.click", False),
        ("app.**", "app", True),
        ("app.**", "app.click", True),
        ("app.**", "app.click.left.x", True),
        ("app.**", "apps.click", False),
        ("app.**", "web", False),
        ("*", "app", True),
        ("*", "app.click", False),
        ("**", "app", True),
        ("**", "a.b.c.d", True),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("*.*", "a.b.c", False),
        ("app.*.*", "app.a.b", True),
        ("app.*.*", "app.a", False),
        ("app.*.**", "app", False),
        ("app.*.**", "app.a", True),
        ("app.*.**", "app.a.b.c", True),
        ("a.b.**", "a.b", True),
        ("a.b.**", "a.c", False),
        ("a.b.**", "a", False),
    ],
)
def test_pattern_matching_table(pattern: str, tag: str, expected: bool) -> None:
    assert TagPattern(pattern).matches(validate_tag(tag)) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "must not be empty"),
        ("a..b", "empty part"),
        (".a", "empty part"),
        ("a.", "empty part"),
        ("a.*.b", "wildcards must come last"),
        ("*.b", "wildcards must come last"),
        ("a.**.b", "'**' must be the last part"),
        ("a.**.*", "'**' must be the last part"),
        ("**.**", "'**' must be the last part"),
        ("a*", "mixes '*' with text"),
        ("a.b*", "mixes '*' with text"),
        ("a.***", "mixes '*' with text"),
        ("a. b", "spaces"),
    ],
)
def test_invalid_patterns_say_why(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        TagPattern(pattern)
    assert repr(pattern) in str(info.value) or pattern == ""


def test_pattern_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        TagPattern(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tag", "error", "message"),
    [
        ("", ValueError, "must not be empty"),
        ("a..b", ValueError, "empty part"),
        ("a.", ValueError, "empty part"),
        ("a.*", ValueError, "only allowed in patterns"),
        ("**", ValueError, "only allowed in patterns"),
        (" a", ValueError, "spaces"),
        (None, TypeError, "must be a str"),
        (b"a.b", TypeError, "must be a str"),
    ],
)
def test_invalid_tags_say_why(tag: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        validate_tag(tag)


def test_patterns_compare_by_text() -> None:
    assert TagPattern("a.*") == TagPattern("a.*")
    assert str(TagPattern("a.**")) == "a.**"
