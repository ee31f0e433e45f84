"""The documentation cannot rot: the site builds in strict mode, and every Python block of the
docs pages and the README runs verbatim, page by page, as a reader would paste them.

A block preceded by ``<!-- docs-test: needs PATH ... -->`` uses run folders that the page makes
with long commands (data generation and training); the test stands in for those with short
trainings on the shipped QM9-xTB sample, then runs the block unchanged. The blocks of one page
share one namespace and one working folder (later blocks may use what earlier ones made).
"""

import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- docs-test: needs (?P<needs>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))


def snippets(page: str) -> list:
    text = (ROOT / page).read_text()
    return [(text[: match.start()].count("\n") + 1, (match.group("needs") or "").split(), match.group("code"))
            for match in BLOCK.finditer(text)]


def _force_run(run_dir: Path, seed: int) -> None:
    """A few steps of EGNN on energies and forces of the shipped QM9-xTB sample: a stand-in
    for a trained run folder (`geognn train train/qm9_xtb_egnn.yaml` and the like)."""
    from geognn.training import TrainConfig, fit, from_dict

    recipe = {
        "model": {"name": "egnn", "options": {"hidden_channels": 16, "num_layers": 2, "num_radial": 4}},
        "data": {"dataset": "ase", "options": {"paths": str(ROOT / "datasets/samples/qm9_xtb_sample.extxyz")},
                 "split": [10, 3, 2], "batch_size": 5},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "energy_per_atom": True},
        "optim": {"lr": 0.005, "max_epochs": 2, "scheduler": "none", "ema_decay": None},
        "log": {"run_dir": str(run_dir), "progress": False, "checkpoint_every": 100},
        "dtype": "float64", "seed": seed,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(from_dict(TrainConfig, recipe))


def test_the_docs_have_runnable_blocks():
    found = {page: snippets(page) for page in PAGES}
    assert sum(len(blocks) for blocks in found.values()) >= 15
    assert all(code.strip() for blocks in found.values() for _, _, code in blocks)
    for page in PAGES:  # a marker must sit right above a python block, or it silently does nothing
        text = (ROOT / page).read_text()
        assert text.count("<!-- docs-test:") == sum(bool(needs) for _, needs, _ in snippets(page)), page


@pytest.mark.parametrize("page", [page for page in PAGES if snippets(page)])
def test_python_blocks_run_verbatim_in_order(page, tmp_path, monkeypatch):
    for name in ("train", "datasets", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("__docs__")  # a module of its own: PyG looks classes' modules up in sys.modules
    monkeypatch.setitem(sys.modules, "__docs__", module)
    namespace = module.__dict__
    for line, needs, code in snippets(page):
        for seed, path in enumerate(needs):
            if not Path(path).exists():
                _force_run(Path(path), seed)
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as err:  # name the block, then let pytest show the traceback
            pytest.fail(f"the Python block at {page}:{line} fails: {type(err).__name__}: {err}")


def test_the_site_builds_in_strict_mode(tmp_path):
    """A broken link, a missing page or reference, or a docstring that does not render fails."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "recipe-reference" / "index.html").exists()
    page = (tmp_path / "site" / "recipe-reference" / "index.html").read_text()
    assert "optim.lr" in page and "data.train_size" in page and "search.trials" in page
    api = (tmp_path / "site" / "api" / "nn" / "index.html").read_text()
    assert "TensorProductConv" in api and "irreps_in" in api


def test_model_pages_document_only_options_that_exist():
    """The option tables of the model pages are written by hand: every option they name must be a
    field of a model's `Config` (a renamed or removed option fails here, not in a reader's recipe)."""
    import dataclasses

    from geognn.models import MODELS

    fields = {item.name for cls in MODELS.values() for item in dataclasses.fields(cls.Config)}
    named = []
    for page in sorted((ROOT / "docs" / "models").glob("*.md")):
        column = None
        for line in page.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
            if cells is None:
                column = None
            elif "field" in cells and "default" in cells:
                column = cells.index("field")
            elif column is not None and not set(line) <= set("|-: "):
                cell = cells[column]
                named += [(page.name, name) for name in (re.findall(r"`([^`]+)`", cell) or [cell])]
    assert len(named) >= 40
    unknown = [(page, name) for page, name in named if name not in fields]
    assert not unknown, unknown
