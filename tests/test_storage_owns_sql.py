"""Storage owns SQL: outside storage/ (and tests/) no module writes SQL, builds a peewee query,
reaches into the tables (`storage.models`) or runs its own transaction on the store. Everything
else asks a repository of storage/ for a domain operation by its name."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What only storage/ may do, each with what it looks like in source.
FORBIDDEN = {
    "SQL text": re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\"?\w+\"?\s+SET|DELETE\s+FROM)\b"),
    "a raw statement (execute_sql)": re.compile(r"\bexecute_sql\b"),
    "the store's connection (store.db)": re.compile(r"\bstore\.db\b"),
    "a transaction of its own on the store": re.compile(r"\bstore\.(read|write|insert|create|save)\("),
    "a peewee query on a table": re.compile(
        r"\b[A-Z][a-z]\w*\.(select|update|insert|insert_many|replace|delete|create|get|get_or_none|get_by_id)\("),
    "a peewee query run (.execute())": re.compile(r"\.execute\(\)"),
    "the tables (storage.models)": re.compile(r"\bstorage\.models\b|\bfrom\s+storage\s+import\s+(\w+\s*,\s*)*models\b"),
    "peewee or sqlite3 itself": re.compile(r"^\s*(import|from)\s+(peewee|playhouse|sqlite3)\b"),
}

# Files allowed to touch SQL while they are being converted (none now); an allowance no longer
# needed fails the last test, so the list cannot go stale.
ALLOWED: set[str] = set()


def _sources() -> list[Path]:
    skip = {"storage", "tests"}
    return sorted(p for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0] not in skip
                  and not any(part.startswith(".") or part in ("build", "dist", "venv") for part in p.relative_to(ROOT).parts)
                  and str(p.relative_to(ROOT)) not in ALLOWED)


def _violations(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    return found


def test_the_scan_covers_the_copiers_packages():
    scanned = {p.relative_to(ROOT).parts[0] for p in _sources()}
    assert {"actors", "app", "broker", "supervisors", "trading", "paper", "run.py"} <= scanned


def test_no_sql_or_peewee_outside_storage():
    found = [violation for path in _sources() for violation in _violations(path)]
    assert not found, "storage is the only code that may touch SQL; ask a repository of storage/ instead:\n" + \
        "\n".join(found)


def test_every_allowance_is_still_needed():
    """An allowed module that no longer touches SQL (or is gone) loses its allowance."""
    clean = [name for name in sorted(ALLOWED) if not (ROOT / name).exists() or not _violations(ROOT / name)]
    assert not clean, f"remove from ALLOWED, they no longer need it: {clean}"
