"""Plots people read: parity tick labels stay plain and apart on large energies (no "1e7" corner text)."""

import pytest
import torch

from geognn.training import plots


def parity_run(tmp_path, reference_ev, noise_ev=0.05):
    """A run folder with only ``predictions_test.pt``, as `fit` leaves it (energies in eV, no baseline)."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.as_tensor(reference_ev, dtype=torch.float64)
    predicted = reference + noise_ev * torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    torch.save({"energy": predicted, "energy_ref": reference, "unit": "eV", "split": "test"},
               tmp_path / "predictions_test.pt")
    return tmp_path


def drawn_parity(run_dir, monkeypatch):
    figures = []

    def keep(plt, figure, title, path):
        figure.tight_layout()
        figure.canvas.draw()
        figures.append(figure)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_parity(run_dir, run_dir)
    return figures[0].axes[0]


def shown_labels(axis, which):
    low, high = getattr(axis, f"get_{which}lim")()
    ticks, labels = getattr(axis, f"get_{which}ticks")(), getattr(axis, f"get_{which}ticklabels")()
    return [(tick, label) for tick, label in zip(ticks, labels) if low <= tick <= high and label.get_text()]


@pytest.mark.parametrize("reference_ev", [
    -10450.0 + 2.0 * torch.randn(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64),  # one molecule's frames
    torch.linspace(-20000.0, -5000.0, 50, dtype=torch.float64),  # molecules of many sizes
    torch.linspace(-0.3, 0.4, 50, dtype=torch.float64),  # after element references: as before
])
def test_parity_ticks_are_plain_few_and_apart(tmp_path, monkeypatch, reference_ev):
    axis = drawn_parity(parity_run(tmp_path, reference_ev), monkeypatch)
    renderer = axis.figure.canvas.get_renderer()
    for which in ("x", "y"):
        shown = shown_labels(axis, which)
        assert 2 <= len(shown) <= 6
        texts = [label.get_text() for _, label in shown]
        assert not any(mark in text for text in texts for mark in ("×10", "10^", "e+", "e-", "$"))
        assert getattr(axis, f"{which}axis").get_offset_text().get_text() == ""
        boxes = sorted((label.get_window_extent(renderer) for _, label in shown), key=lambda box: box.x0 + box.y0)
        for first, second in zip(boxes, boxes[1:]):  # labels do not run into each other
            assert not first.overlaps(second), texts
    # The data in the label's unit, less the offset the label states: the ticks are those values.
    label = axis.get_xlabel()
    assert label.startswith("reference energy") and label.endswith("eV]")
    factor = 1000.0 if label.endswith("[meV]") else 1.0
    assert factor == (1000.0 if reference_ev.abs().max() < 100 else 1.0)  # total energies in eV, not 8 digits of meV
    offset_text = label.split("\n")[1].split(" [")[0] if "\n" in label else ""
    offset = -float(offset_text.replace("−", "-").replace(" ", "").replace(",", "")) if offset_text else 0.0
    data = axis.collections[0].get_offsets()[:, 0] + offset
    assert data.min() == pytest.approx(factor * float(reference_ev.min()), abs=1e-3 * factor)
    assert data.max() == pytest.approx(factor * float(reference_ev.max()), abs=1e-3 * factor)
    assert axis.get_title().endswith(" meV")  # the error keeps the leaderboard's unit
