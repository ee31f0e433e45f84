"""What `EnergyModel` adds around every model: registry, config, readout, normalisation, errors."""

import pytest
import torch
from ase.build import bulk, molecule
from torch_geometric.data import Data

from geognn.data import atoms_to_data, keys
from geognn.models import EGNN, MODELS, build_model
from geognn.testing import molecules, to_batch

SMALL = {"hidden_channels": 8, "num_layers": 2}


def small(**kwargs):
    torch.manual_seed(0)
    return build_model("egnn", **SMALL, **kwargs).double().eval()


def test_registry_and_defaults():
    assert MODELS["egnn"] is EGNN
    model = build_model("egnn")
    assert model.config == EGNN.Config() and model.config.max_atomic_number >= 100
    out = model(atoms_to_data(molecule("CH3CHO")), compute_forces=True)
    assert out[keys.ENERGY].shape == (1,) and out[keys.FORCES].shape == (7, 3)
    assert out[keys.ENERGY].dtype == torch.float32


def test_unknown_model_or_option_is_named():
    with pytest.raises(ValueError, match="unknown model 'schnetz'.*egnn"):
        build_model("schnetz")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden_channels'\]"):
        build_model("egnn", hiden_channels=8)
    with pytest.raises(ValueError, match="unknown envelope"):
        build_model("egnn", envelope="gaussian")
    with pytest.raises(ValueError, match="unknown readout"):
        build_model("egnn", readout="max")
    with pytest.raises(TypeError, match="EGNNConfig"):
        EGNN({"cutoff": 4.0})


def test_readout_sum_and_mean():
    data = to_batch(molecules()[:3])
    summed = small()(data)
    averaged = small(readout="mean")(data)
    counts = torch.bincount(data.batch).double()
    assert torch.allclose(summed[keys.ENERGY], averaged[keys.ENERGY] * counts)
    assert torch.allclose(summed[keys.NODE_ENERGY], averaged[keys.NODE_ENERGY])


def test_scale_shift_and_atomic_references_apply_per_atom():
    data = to_batch(molecules()[:2])
    model = small()
    before = model(data, compute_forces=True)
    model.energy_scale.fill_(2.0)
    model.energy_shift.fill_(0.5)
    model.atomic_reference[1] = -13.6  # H
    model.atomic_reference[6] = -1000.0  # C
    after = model(data, compute_forces=True)
    reference = model.atomic_reference[data.z]
    assert torch.allclose(after[keys.NODE_ENERGY], 2.0 * before[keys.NODE_ENERGY] + 0.5 + reference)
    # Constant per-atom terms carry no force.
    assert torch.allclose(after[keys.FORCES], 2.0 * before[keys.FORCES])
    assert "atomic_reference" in model.state_dict()


def test_forces_work_under_no_grad_and_leave_the_input_alone():
    model = small()
    data = atoms_to_data(molecule("H2O"), dtype=torch.float64)
    with torch.no_grad():
        out = model(data, compute_forces=True)
    assert out[keys.FORCES].shape == (3, 3) and not data.pos.requires_grad
    assert not out[keys.FORCES].requires_grad  # eval mode: no graph kept for a second derivative


def test_stress_needs_a_periodic_cell():
    model = small()
    with pytest.raises(ValueError, match="stress needs a periodic structure"):
        model(atoms_to_data(molecule("H2O"), dtype=torch.float64), compute_stress=True)
    data = atoms_to_data(bulk("Si", "diamond", a=5.43), dtype=torch.float64)
    no_pbc = Data(z=data.z, pos=data.pos, cell=data.cell)
    with pytest.raises(ValueError, match="no 'pbc'"):
        model(no_pbc)


def test_neighbour_limit_reaches_the_graph_and_warns():
    data = atoms_to_data(bulk("Cu", "fcc", a=3.6), dtype=torch.float64)
    limited = small(max_num_neighbors=6)
    with pytest.warns(UserWarning, match="max_num_neighbors=6"):
        limited(data)
    with pytest.warns(UserWarning, match="dropped 36 edges"):  # fcc within 5 Å: 12 + 6 + 24 neighbours
        graph = limited.build_graph(data.pos, torch.zeros(1, dtype=torch.long), 1, data.cell, data.pbc)
    assert torch.equal(torch.bincount(graph.edge_index[1]), torch.tensor([6]))


def test_repr_lists_the_config():
    text = repr(small(vector_channels=2))
    assert "vector_channels=2" in text and "cutoff=5.0" in text
