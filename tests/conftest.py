"""Shared fixtures: the bundled sample captures and the optional real-capture corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def pcaps_dir() -> Path:
    """The sample captures made by ``pcaps/make_samples.py``."""
    return PCAPS


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus of real captures; tests using it skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-capture corpus not found at {CORPUS}")
    return CORPUS
