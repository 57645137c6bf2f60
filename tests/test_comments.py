"""Comments say why, in words a reader of this repository can follow: no comment or docstring
outside tests/ cites a scenario id (a row id of the acceptance matrix, such as "7.3", "1.4.5" or
"B.6"). Tests carry those ids in their names, and nothing else does."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A row id: "1.1.1".."1.5.9" (placement), "2.1".."8.10", "B.1".."B.19", or a whole section ("2.*").
_ID = re.compile(r"(?<![\w./-])(?:1\.[1-5]\.[1-9]|[2-8]\.(?:10|[1-9])|B\.[1-9]\d?|[1-8]\.\*)(?![\w.]*\d)")
# The same shapes that are not ids: a quantity with its unit, a version after a name, a value after an operator.
_UNIT_AFTER = re.compile(r"\s*(?:ms|s|sec|seconds?|minutes?|%|x|KB|KiB|MB|MiB|GB|lakh|crore|lots?|times|rupees)\b")
_NAME_BEFORE = re.compile(r"(?:dhanhq|python|yaml|http|tls|pykka|peewee|sqlite|version|v|grafana|prometheus)\s*$",
                          re.IGNORECASE)
_OPERATOR_BEFORE = re.compile(r"[=<>*+~/]\s*$")


def scenario_ids(text: str) -> list[str]:
    """The scenario ids `text` cites."""
    found = []
    for match in _ID.finditer(text):
        before, after = text[:match.start()], text[match.end():]
        if _UNIT_AFTER.match(after) or _NAME_BEFORE.search(before) or _OPERATOR_BEFORE.search(before):
            continue
        found.append(match.group())
    return found


def _comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """(line number, line) of every comment and every line of a docstring in a module."""
    lines = [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(source).readline)
             if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                first = node.body[0].lineno
                lines += [(first + n, line) for n, line in enumerate(docstring.splitlines())]
    return sorted(lines)


def _sources() -> list[Path]:
    skipped = {"tests", ".git", ".venv", "build", "dist"}
    return sorted(path for path in ROOT.rglob("*.py")
                  if not skipped & set(path.relative_to(ROOT).parts[:-1]) and "site-packages" not in path.parts)


@pytest.mark.parametrize("text, ids", [
    ("Lookups that miss trigger one reload (8.6) before the caller", ["8.6"]),
    ("the capital check (8.4, 8.5); the broker's is final (5.3)", ["8.4", "8.5", "5.3"]),
    ("Multi-leg strategies (1.4.5): legs", ["1.4.5"]),
    ("tokens never leak (B.8); see B.10", ["B.8", "B.10"]),
    ("Scenarios 2.* (modify) and 8.1 to 8.10", ["2.*", "8.1", "8.10"]),
    ("the request dhanhq 2.3 sends; dhanhq 2.3.0, Python 3.11, YAML 1.1, HTTP/1.1", []),
    ("every 2.5 s, 0.5 ms, 1.5 lakh, 2.1 lots; x = 5.0, ratio=2.5, 4.56", []),
])
def test_scenario_ids_are_told_from_numbers_and_versions(text: str, ids: list[str]) -> None:
    assert scenario_ids(text) == ids


def test_no_comment_or_docstring_outside_tests_cites_a_scenario_id() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: {', '.join(ids)}"
             for path in _sources()
             for line, text in _comments_and_docstrings(path.read_text(encoding="utf-8"))
             if (ids := scenario_ids(text))]
    assert not found, ("say what a scenario id means instead (tests keep the ids in their names):\n"
                       + "\n".join(found))
