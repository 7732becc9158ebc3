"""The bundled suites, a plugin like any other: installed as the package ``ood_bench_suites`` (this
folder, see pyproject.toml) and registered through the ``ood_bench`` entry point ``suites``, so that
``ood-bench run paper`` finds them in an editable install and from a wheel alike."""

from __future__ import annotations

import re
from pathlib import Path

from logitnorm_bench import hookimpl

HERE = Path(__file__).resolve().parent


@hookimpl
def register_suites(register):
    for path in sorted(HERE.glob("*.yaml")):
        register(path.stem, lambda path=path: path, description=_description(path))


def _description(path: Path) -> str:
    """The suite's top-level ``description:`` line, read without building the suite."""
    found = re.search(r"^description:[ \t]*(.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return found.group(1).strip() if found else ""
