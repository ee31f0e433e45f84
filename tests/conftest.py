"""Fixtures shared by every test folder."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def emt_crystals():
    """``datasets/emt_crystals.py`` as a module: EMT-labelled fcc crystals (and clusters, isolated atoms)."""
    spec = importlib.util.spec_from_file_location("emt_crystals", ROOT / "datasets" / "emt_crystals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
