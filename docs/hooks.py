"""mkdocs hook: shardflow's docstrings cross-reference with Sphinx roles
(:class:`~shardflow.PutResult`); show each as code, with ``~`` keeping the last name only,
as Sphinx would."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:class|meth|func|mod|attr|data|exc|obj|const|py:\w+):<code>(~?)([^<]*)</code>"
)


def _short(match: re.Match[str]) -> str:
    target = match[2]
    return f"<code>{target.rsplit('.', 1)[-1] if match[1] else target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(_short, html)


_HELP = "<!-- shardflow-help -->"


def _help_texts() -> str:
    """``shardflow --help`` and each command's ``--help``, from the parser itself."""
    import contextlib
    import io
    import os

    os.environ["COLUMNS"] = "90"  # argparse wraps to this
    from shardflow.cli import build_parser, main

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    # bench passes --help on to the benchmarks, which a built wheel does not have
    names = [name for name in commands.choices if name != "bench"]
    blocks = []
    for command in ((), *((name,) for name in names)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*command, "--help"])
        title = " ".join(("shardflow", *command, "--help"))
        blocks.append(f"### `{title}`\n\n```text\n{out.getvalue().rstrip()}\n```\n")
    return "\n".join(blocks)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if _HELP in markdown:
        markdown = markdown.replace(_HELP, _help_texts())
    return markdown
