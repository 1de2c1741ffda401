"""Every input the fuzzers kept in ``fuzz/regressions/`` passes every oracle.

``fuzz/regressions/capture/*`` are capture files: each is analysed with the interpreted
and with the compiled kernels, through ``fuzz.checks.check_capture`` (no exception but
the tool's own, every packet the reader yields counted in exactly one category, a
coherent summary), and both must give the same result. ``fuzz/regressions/rules/*``
are rule files: loaded, or refused with one ``RulesError`` naming the file, and a
loaded set classifies like ``RuleSet.classify_one``.

A file whose bug is still open in ``classifier/`` is listed in :data:`OPEN` and
expected to fail (strictly: once the bug is fixed the test says so, and its line here
goes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from classifier.lookup import compile_rules
from classifier.rules import load_rules
from fuzz.checks import check_modes_agree, check_rules_bytes
from tests.deadline import deadline

REGRESSIONS = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"
RULES = compile_rules(load_rules())
#: Seconds one input may take (every regression input is small).
DEADLINE = 60

#: Inputs of bugs still open, by the start of their path under fuzz/regressions/.
OPEN: dict[str, str] = {
}


def cases() -> Iterator[Any]:
    for kind in ("capture", "rules"):
        folder = REGRESSIONS / kind
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not path.is_file() or path.name.startswith("."):
                continue
            name = f"{kind}/{path.name}"
            reason = next((r for prefix, r in OPEN.items() if name.startswith(prefix)), None)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(kind, path, id=name, marks=marks)


def test_there_are_regression_inputs() -> None:
    assert list(cases())


@pytest.mark.parametrize(("kind", "path"), list(cases()))
def test_regression_input(kind: str, path: Path, tmp_path: Path) -> None:
    with deadline(DEADLINE):
        if kind == "capture":
            copy = tmp_path / "input.cap"  # the summary names the path: keep it short
            copy.write_bytes(path.read_bytes())
            check_modes_agree(str(copy), RULES)
        else:
            check_rules_bytes(path.read_bytes(), tmp_path)
