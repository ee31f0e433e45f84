"""MkDocs hooks: the pages that are generated at build time, so that they cannot drift.

- ``<!-- include: PATH -->`` in a page is replaced by that repository file (``train/RESULTS.md``,
  ``benchmarks/README.md``): the numbers live in one place; the figures those files show
  (``train/figures/``) are added to the site beside them.
- ``<!-- recipe-reference -->`` is replaced by one table per recipe section, generated from the
  dataclasses that parse recipes (`geognn.training.config`, the comparison's extra keys and
  `geognn.training.search.SearchSettings`): every key, its type and default.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"<!-- include: (?P<path>[^ ]+) -->")
FIGURES = ROOT / "train" / "figures"


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for figure in sorted(FIGURES.glob("*.png")):
        files.append(File.generated(config, f"figures/{figure.name}", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    def include(match):
        path = ROOT / match.group("path")
        if not path.is_file():
            raise FileNotFoundError(f"{page.file.src_uri}: cannot include {match.group('path')}: no such file")
        text = path.read_text()
        depth = page.file.src_uri.count("/")  # figures sit at the site's root
        return text.replace("](figures/", "](" + "../" * depth + "figures/")

    markdown = INCLUDE.sub(include, markdown)
    if "<!-- recipe-reference -->" in markdown:
        markdown = markdown.replace("<!-- recipe-reference -->", recipe_reference())
    return markdown


# ------------------------------------------------------------------------------ recipe reference


def _type_name(hint) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    if isinstance(hint, type):
        text = hint.__name__
    return text.replace("Union[str, list]", "str | list")


def _default(item: dataclasses.Field) -> str:
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return "(required)"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _table(cls, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = ["| key | type | default |", "| --- | --- | --- |"]
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            continue
        lines.append(f"| `{prefix}{item.name}` | `{_type_name(hints[item.name])}` | `{_default(item)}` |")
    return lines


def _doc(cls) -> str:
    return inspect.cleandoc(cls.__doc__ or "").replace("``", "`")


def recipe_reference() -> str:
    from geognn.training import config as recipe
    from geognn.training.compare import RANK_METRICS, SIZE_BUDGETS
    from geognn.training.search import SearchSettings

    out = []
    sections = [("Top level", recipe.TrainConfig, ""), ("model", recipe.ModelSection, "model."),
                ("data", recipe.DataSection, "data."), ("loss", recipe.LossSection, "loss."),
                ("optim", recipe.OptimSection, "optim."), ("log", recipe.LogSection, "log.")]
    for title, cls, prefix in sections:
        out += [f"## {title}", "", _doc(cls), "", *_table(cls, prefix), ""]
    out += ["## model.options, per model", "",
            "The fields of `MODELS[name].Config`, with their defaults (shapes and meaning on each model's page "
            "and in the [API reference](api/models.md)):", ""]
    from geognn.models import MODELS

    for name, cls in MODELS.items():
        out += [f"??? note \"`{name}` (`{cls.__name__}`)\"", ""]
        out += ["    " + line for line in _table(cls.Config, "")] + [""]
    out += ["## data.options, per dataset", "",
            "The keyword arguments of each loader (`dtype` comes from the recipe's top-level `dtype`):", "",
            "| dataset | loader | options |", "| --- | --- | --- |"]
    from geognn.training.data import _SIGNATURES, DATASETS

    for name, loader in DATASETS.items():
        loader = _SIGNATURES.get(name, loader)  # a wrapper's options are its target's
        parameters = [p for p in inspect.signature(loader).parameters.values()
                      if p.name not in ("self", "dtype", "transform") and p.kind is not p.VAR_KEYWORD]
        shown = ", ".join(f"`{p.name}`" + ("" if p.default is inspect.Parameter.empty else f" = `{p.default!r}`")
                          for p in parameters)
        out.append(f"| `{name}` | `{getattr(loader, '__qualname__', loader)}` | {shown} |")
    out += ["", "In a recipe `qm9_xtb` defaults to `generate: false`: a missing file is an error, not an hour of "
            "xTB labelling ([Datasets](datasets.md)).",
            "", "## Comparison recipes (`geognn compare`)", "",
            "A comparison recipe is a training recipe whose `model:` is replaced by `models:` (label → options, "
            "or `{name, options}`; each may add `search:`, a search space), with these top-level keys:", "",
            "| key | type | default |", "| --- | --- | --- |",
            "| `models` | `dict` | `(required)` |", "| `seeds` | `list[int]` | `[0]` |",
            "| `train_sizes` | `list[int] | None` | `null` |",
            f"| `size_budget` | `{' | '.join(SIZE_BUDGETS)}` | `'epochs'` |",
            f"| `rank_by` | `{' | '.join(RANK_METRICS)} | None` | `null` (force MAE when forces are trained) |",
            "| `bootstrap_samples` | `int` | `10000` |", "",
            "### search", "", _doc(SearchSettings), "", *_table(SearchSettings, "search."), ""]
    return "\n".join(out)
