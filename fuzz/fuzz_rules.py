"""Coverage-guided fuzzing of rule files: the fuzz input is a rule file's bytes.

Each input goes through ``tomllib`` + ``parse_rules`` and through ``load_rules`` on a
file; a rule set that loads is compiled and checked against the plain-Python
reference ``RuleSet.classify_one`` (see ``fuzz/checks.py``)::

    python fuzz/fuzz_rules.py -dict=fuzz/rules.dict -max_total_time=60 \
        fuzz/work/rules/corpus fuzz/corpus/rules
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def make_target() -> Callable[[bytes], None]:
    """The fuzz target, with the TOML parser and the rule code instrumented."""
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["classifier", "tomllib"]):
        import tomllib  # noqa: F401

        import classifier.lookup
        import classifier.rules  # noqa: F401

    from classifier.errors import RulesError
    from fuzz._harness import guarded
    from fuzz.checks import check_rules_bytes, signature

    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-rules-", dir=shm if shm.is_dir() else None))

    def test_one_input(data: bytes) -> None:
        check_rules_bytes(data, tmp)

    return guarded(test_one_input, (RulesError,), signature)


def main() -> None:
    atheris.Setup(sys.argv, make_target())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
