"""Neighbour-search backends: choosing one, errors, exact settling, and models unchanged by the choice.

Edge sets of every backend against brute force are in test_radius.py (each test there runs
once per installed backend).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from brute_force import brute_molecule, brute_periodic

from geognn.graph import (
    NEIGHBOR_BACKENDS,
    NeighborBackend,
    installed_backends,
    periodic_radius_graph,
    radius_graph,
    register_neighbor_backend,
)
from geognn.graph.neighbors import AUTO_ORDER, SETTLE_BAND, Candidates, _complete_box, _lay_out_apart, neighbor_backend
from geognn.graph.radius import _settle, edge_order
from geognn.models import MODELS, build_model
from geognn.testing import molecules, periodic_structures, to_batch

CPU = torch.device("cpu")


class Missing(NeighborBackend):
    name, module, install = "not-here", "geognn_no_such_module", 'pip install "geognn[not-here]"'


@pytest.fixture
def missing_backend():
    register_neighbor_backend(Missing())
    yield "not-here"
    del NEIGHBOR_BACKENDS["not-here"]


def test_vesin_is_installed_and_auto_prefers_it():
    assert "vesin" in installed_backends()
    for device in ("cpu", "cuda"):
        for kind in ("molecules", "periodic"):
            assert AUTO_ORDER[(device, kind)][0] == "vesin"
            assert neighbor_backend("auto", torch.device(device), kind).name == "vesin"


def test_unknown_backend_is_a_one_line_error():
    pos = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"unknown neighbour-list backend 'flann'; choose 'auto' or one of vesin"):
        radius_graph(pos, 1.0, backend="flann")
    with pytest.raises(ValueError, match="unknown neighbour-list backend"):
        build_model("egnn", neighbor_backend="flann")


def test_missing_backend_names_the_extra_to_install(missing_backend):
    pos = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ImportError, match=r"'not-here' is not installed: pip install \"geognn\[not-here\]\"") as error:
        radius_graph(pos, 1.0, backend=missing_backend)
    assert "\n" not in str(error.value)
    with pytest.raises(ImportError, match="not installed"):
        periodic_radius_graph(pos, 1.0, torch.eye(3, dtype=torch.float64), torch.tensor([True] * 3),
                              backend=missing_backend)
    # a model may name it (the config is valid); using it says what to install
    model = build_model("schnet", neighbor_backend=missing_backend).double()
    with pytest.raises(ImportError, match="geognn\\[not-here\\]"):
        model(to_batch(molecules()[:1]))


def test_auto_skips_backends_that_are_not_installed(missing_backend, monkeypatch):
    from geognn.graph import neighbors

    monkeypatch.setitem(neighbors.AUTO_ORDER, ("cpu", "molecules"), ("not-here", "vesin"))
    monkeypatch.setattr(neighbors, "_RESOLVED", {})
    assert neighbor_backend("auto", CPU, "molecules").name == "vesin"


def test_checkpoint_with_a_missing_backend_loads_with_auto(missing_backend):
    from geognn.models.checkpoint import model_from_checkpoint

    model = build_model("egnn", neighbor_backend=missing_backend)
    checkpoint = {"model_name": "egnn", "model_config": dict(vars(model.config)), "state_dict": model.state_dict()}
    with pytest.warns(UserWarning, match="'not-here', which is not installed here; using 'auto'"):
        loaded = model_from_checkpoint(checkpoint)
    assert loaded.config.neighbor_backend == "auto"
    data = to_batch(molecules()[:2], dtype=torch.float32)
    torch.testing.assert_close(loaded(data)["energy"], model.eval()(data, edge_index=radius_graph(data.pos, 5.0, data.batch))["energy"])


def test_model_option_reaches_the_search(monkeypatch):
    asked = []
    vesin = NEIGHBOR_BACKENDS["vesin"]
    original = type(vesin).molecules

    def spy(self, *args):
        asked.append(self.name)
        return original(self, *args)

    monkeypatch.setattr(type(vesin), "molecules", spy)
    model = build_model("painn", neighbor_backend="vesin").double()
    model(to_batch(molecules()[:2]))
    assert asked == ["vesin"]
    assert model.graph_options()["backend"] == "vesin"
    bond_model = build_model("gin", neighbor_backend="vesin").double()
    assert bond_model.graph_options()["backend"] == "vesin"
    bond_model(to_batch(molecules()[:2]))
    assert asked == ["vesin", "vesin"]  # the bond graph's search too


def test_recipe_model_options_check_the_backend():
    from geognn.models.base import EnergyModel

    with pytest.raises(ValueError, match="unknown neighbour-list backend"):
        MODELS["egnn"].from_config({"neighbor_backend": "kdtree"})
    model = MODELS["egnn"].from_config({"neighbor_backend": "vesin"})
    assert isinstance(model, EnergyModel) and model.config.neighbor_backend == "vesin"


# --------------------------------------------------------------------------- exact settling


def test_settle_decides_the_band_by_the_exact_distance():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 2.0, 0]], dtype=torch.float64)
    r = 1.0 + 1e-13
    # a backend that measured (0, 1) just beyond r and (0, 2) inside it, both wrongly
    found = Candidates(torch.tensor([1, 0, 2]), torch.tensor([0, 1, 0]), None,
                       torch.tensor([r * (1 + SETTLE_BAND / 2), 0.9, r * (1 - SETTLE_BAND / 2)], dtype=torch.float64))
    settled = _settle(found, pos, r)
    assert settled.sender.tolist() == [1, 0] and settled.receiver.tolist() == [0, 1]  # (2, 0) is 2 Å apart
    # distances well inside the band are not recomputed
    inside = Candidates(torch.tensor([2]), torch.tensor([0]), None, torch.tensor([0.5], dtype=torch.float64))
    assert _settle(inside, pos, r).sender.tolist() == [2]


def test_settle_uses_the_lattice_shift():
    cell = torch.eye(3, dtype=torch.float64)[None] * 3.0
    pos = torch.tensor([[0.25, 0, 0], [2.75, 0, 0]], dtype=torch.float64)
    shift = torch.tensor([[-1, 0, 0], [0, 0, 0]])
    found = Candidates(torch.tensor([1, 1]), torch.tensor([0, 0]), shift,
                       torch.tensor([0.5, 0.5], dtype=torch.float64))  # the second is 2.5 Å in truth
    settled = _settle(found, pos, 0.5 + 1e-12, cell, torch.zeros(2, dtype=torch.long))
    assert settled.shift.tolist() == [[-1, 0, 0]]


@pytest.mark.parametrize("numpy_arrays", [False, True])
def test_edge_order_is_lexicographic(numpy_arrays):
    rng = np.random.default_rng(5)
    edges = {(int(j), int(i), *map(int, s)) for j, i, s in
             zip(rng.integers(0, 40, 500), rng.integers(0, 40, 500), rng.integers(-3, 4, (500, 3)))}
    sender, receiver, *shift = (np.array(column) for column in zip(*edges))
    shift = np.stack(shift, axis=1)
    for with_shift in (False, True):
        if not with_shift:
            keep = {}
            for e in edges:
                keep[e[:2]] = e
            pairs = np.array(sorted(keep))
            s, r, sh = pairs[:, 0], pairs[:, 1], None
        else:
            s, r, sh = sender, receiver, shift
        args = (r, s, sh) if numpy_arrays else tuple(None if a is None else torch.from_numpy(a) for a in (r, s, sh))
        order = np.asarray(edge_order(*args, num_nodes=40))
        rows = [(r[k], s[k], *(() if sh is None else sh[k])) for k in order]
        assert rows == sorted(rows) and len(set(order.tolist())) == len(s)


def test_layout_separates_structures_by_more_than_the_cutoff():
    rng = np.random.default_rng(3)
    sizes = [5, 1, 9, 3]
    pos = torch.tensor(rng.normal(size=(sum(sizes), 3)) * 2.0, dtype=torch.float64)
    pos[5:14] += 500.0  # one structure far away: each is moved from its own corner
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    laid = _lay_out_apart(pos, 3.0, batch, 4)
    distance = torch.cdist(laid, laid)
    other = batch[:, None] != batch[None, :]
    assert float(distance[other].min()) > 3.0
    same = ~other
    torch.testing.assert_close(distance[same], torch.cdist(pos, pos)[same], rtol=0, atol=1e-12)


@pytest.mark.parametrize("pbc", [(True, False, False), (False, True, True), (True, True, False), (False,) * 3])
def test_complete_box_keeps_periodic_rows_and_has_volume(pbc):
    cell = torch.tensor([[3.0, 0.2, 0.0], [0.5, 4.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    cell[2] = torch.tensor([0.3, -0.2, 5.0], dtype=torch.float64) if pbc[2] else 0.0
    box = _complete_box(cell, torch.tensor(pbc))
    for k in range(3):
        if pbc[k]:
            assert torch.equal(box[k], cell[k])
    assert abs(float(torch.linalg.det(box))) > 1e-6


def test_isolated_atoms_and_single_atoms_give_no_edges():
    pos = torch.tensor([[0.0, 0, 0], [10.0, 0, 0], [0.0, 10.0, 0]], dtype=torch.float64)
    for backend in installed_backends():
        assert radius_graph(pos, 2.0, backend=backend).shape == (2, 0)
        assert radius_graph(pos[:1], 2.0, backend=backend).shape == (2, 0)
        assert radius_graph(pos, 2.0, torch.tensor([0, 1, 2]), backend=backend).shape == (2, 0)


# --------------------------------------------------------------------------- backends agree, models unchanged


def _brute_force_graph(data):
    """The brute-force edges of a batch, sorted like geognn's: edge_index [2, E], edge_shift [E, 3] or None."""
    pos, batch = data.pos.detach().double().numpy(), data.batch.numpy()
    if "cell" not in data:
        edges = sorted(brute_molecule(pos, 5.0, batch), key=lambda e: (e[1], e[0]))
        return torch.tensor(edges).T.contiguous(), None
    edges = sorted(brute_periodic(pos, 5.0, data.cell.double().numpy(), data.pbc.numpy(), batch),
                   key=lambda e: (e[1], e[0], *e[2:]))
    edges = torch.tensor(edges)
    return edges[:, :2].T.contiguous(), edges[:, 2:].to(data.pos.dtype)


def test_every_backend_gives_identical_tensors():
    """Not only the same edge set: the same order, so downstream sums are bit-identical."""
    molecule_batch = to_batch(molecules())
    periodic_batch = to_batch(periodic_structures())
    results = {}
    for backend in installed_backends():
        results[backend] = (
            radius_graph(molecule_batch.pos, 5.0, molecule_batch.batch, backend=backend),
            *periodic_radius_graph(periodic_batch.pos, 5.0, periodic_batch.cell, periodic_batch.pbc,
                                   periodic_batch.batch, backend=backend),
        )
    reference = (*_brute_force_graph(molecule_batch)[:1], *_brute_force_graph(periodic_batch))
    for backend, tensors in results.items():
        for got, expected in zip(tensors, reference):
            assert torch.equal(got, expected), backend


POSITION_MODELS = sorted(name for name, cls in MODELS.items() if cls.uses_positions)


@pytest.mark.parametrize("name", POSITION_MODELS)
def test_forces_and_stress_do_not_depend_on_the_backend(name):
    torch.manual_seed(0)
    model = build_model(name, cutoff=5.0).double()
    for structures in (molecules()[:4], periodic_structures()):
        data = to_batch(structures)
        periodic = "cell" in data
        edge_index, edge_shift = _brute_force_graph(data)
        reference = model(data, compute_forces=True, compute_stress=periodic, edge_index=edge_index, edge_shift=edge_shift)
        for backend in installed_backends():
            model.config.neighbor_backend = backend
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no neighbour was dropped on the way
                out = model(data, compute_forces=True, compute_stress=periodic)
            for key in ("energy", "forces") + (("stress",) if periodic else ()):
                torch.testing.assert_close(out[key], reference[key], rtol=1e-12, atol=1e-12,
                                           msg=f"{name}, {backend}, {key}")
        model.config.neighbor_backend = "auto"


def test_geognn_works_without_torch_cluster():
    """As after ``pip uninstall torch-cluster``: import, auto, every model's forward, and the
    one-line error when torch-cluster is asked for."""
    script = textwrap.dedent("""
        import sys
        sys.modules["torch_cluster"] = None  # import fails, find_spec finds nothing
        import torch
        import geognn
        from geognn.graph import installed_backends, radius_graph
        from geognn.models import MODELS, build_model
        from geognn.testing import molecules, periodic_structures, to_batch
        assert "torch-cluster" not in installed_backends(), installed_backends()
        for name, cls in MODELS.items():
            model = build_model(name).double()
            out = model(to_batch(molecules()[:2]), compute_forces=cls.uses_positions)
            assert torch.isfinite(out["energy"]).all(), name
        data = to_batch(periodic_structures()[:1])
        build_model("nequip").double()(data, compute_forces=True, compute_stress=True)
        try:
            radius_graph(torch.rand(3, 3), 1.0, backend="torch-cluster")
        except ImportError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("the neighbour-list backend 'torch-cluster' is not installed: "
                                            'pip install "geognn[cluster]"')
