"""What `EnergyModel` adds around every model: registry, config, readout, normalisation, errors."""

import pytest
import torch
from ase.build import bulk, molecule
from torch_geometric.data import Data

from geognn.data import atoms_to_data, keys
from geognn.models import EGNN, MODELS, AtomGraph, build_model
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
    with pytest.raises(ValueError, match=r"unknown key 'EGNN.hiden_channels'; did you mean hidden_channels"):
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


# ---- an explicitly given graph (model(data, edge_index=...)) ----

EXPLICIT_MODELS = ["egnn", "schnet", "painn", "dimenet++", "nequip", "gin", "mpnn"]


@pytest.mark.parametrize("name", EXPLICIT_MODELS)
def test_explicit_graph_equal_to_the_builders_gives_the_same_outputs(name):
    """Handing a model the very edges its builder finds (in shuffled order) changes nothing:
    energies, and forces where the model has them. This pins that the given graph goes
    through the same geometry and (for bond graphs) the same edge attributes."""
    torch.manual_seed(0)
    model = build_model(name).double().eval()
    batch = to_batch(molecules()[:3])
    z, pos = batch[keys.ATOMIC_NUMBERS], batch[keys.POSITIONS]
    graph = model.build_graph(pos, batch.batch, batch.num_graphs, z=z)
    order = torch.randperm(graph.edge_index.shape[1])
    forces = model.uses_positions
    ours = model(batch, compute_forces=forces, edge_index=graph.edge_index[:, order])
    reference = model(batch, compute_forces=forces)
    torch.testing.assert_close(ours[keys.ENERGY], reference[keys.ENERGY], rtol=1e-10, atol=1e-10)
    if forces:
        torch.testing.assert_close(ours[keys.FORCES], reference[keys.FORCES], rtol=1e-10, atol=1e-10)


def test_explicit_graph_is_used_and_a_data_field_is_not():
    """A sparser graph changes the energy to what the layers give on exactly that graph (its
    edge vectors written out by hand); an ``edge_index`` stored in the data (PyG's QM9 keeps
    its bonds there) is ignored unless passed explicitly."""
    model = small(cutoff=3.0)
    pos = torch.tensor([[0.0, 0, 0], [1.2, 0, 0], [-0.6, 1.0, 0]], dtype=torch.float64)
    data = Data(z=torch.tensor([6, 8, 8]), pos=pos)
    star = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])  # no O-O edge, though within the cutoff
    full = model(data)[keys.ENERGY]
    on_star = model(data, edge_index=star)[keys.ENERGY]
    assert not torch.allclose(full, on_star)
    edge_vec = pos[star[0]] - pos[star[1]]
    graph = AtomGraph(star, edge_vec, edge_vec.norm(dim=-1), None, torch.zeros(3, dtype=torch.long), 1)
    by_hand = model.atomic_energies(data.z, pos, graph)[keys.NODE_ENERGY].sum()
    torch.testing.assert_close(on_star, by_hand.view(1))
    stored = Data(z=data.z, pos=pos, edge_index=star)
    torch.testing.assert_close(model(stored)[keys.ENERGY], full)


def test_explicit_periodic_graph_with_shifts_gives_the_same_stress():
    """Periodic structures take the lattice image of each sender with the edges; the energy,
    forces and stress then equal those on the builder's own graph."""
    model = small()
    atoms = bulk("Si", "diamond", a=5.43).repeat((1, 1, 2))
    atoms.rattle(0.05, seed=1)
    data = atoms_to_data(atoms, dtype=torch.float64)
    batch = to_batch([atoms])
    graph = model.build_graph(batch.pos, batch.batch, 1, batch.cell, batch.pbc, z=batch.z)
    ours = model(data, compute_forces=True, compute_stress=True, edge_index=graph.edge_index,
                 edge_shift=graph.edge_shift)
    reference = model(data, compute_forces=True, compute_stress=True)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-10, atol=1e-12)


def test_bad_explicit_graphs_are_named():
    model = small(cutoff=3.0)
    data = to_batch(molecules()[:2])
    n = int((data.batch == 0).sum())
    cases = [
        (torch.tensor([0, 1]), "must be a \\[2, E\\] tensor"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "must be a long tensor"),
        (torch.tensor([[0, 999], [1, 0]]), "outside 0"),
        (torch.tensor([[0, 1], [0, 2]]), "self-loops"),
        (torch.tensor([[0, n], [n, 0]]), "different structures"),
    ]
    for edge_index, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            model(data, edge_index=edge_index)
    far = molecules()[0]
    far.positions[1] += [20.0, 0, 0]
    with pytest.raises(ValueError, match="beyond the model's cutoff"):
        model(to_batch([far]), edge_index=torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="edge_shift was given without edge_index"):
        model(data, edge_shift=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="edge_shift is for periodic"):
        model(data, edge_index=torch.tensor([[0, 1], [1, 0]]), edge_shift=torch.zeros(2, 3))
    crystal = atoms_to_data(bulk("Si", "diamond", a=5.43), dtype=torch.float64)
    with pytest.raises(ValueError, match="need edge_shift"):
        model(crystal, edge_index=torch.tensor([[0, 1], [1, 0]]))


def test_model_options_are_type_checked_like_recipes():
    """The recipes' checker: a wrong type is named with the option and the expected type; YAML
    lists become the tuples a config declares."""
    with pytest.raises(ValueError, match=r"EGNN.hidden_channels: expected int, got '8' \(str\)"):
        build_model("egnn", hidden_channels="8")
    with pytest.raises(ValueError, match=r"EGNN.update_coords: expected bool, got 1"):
        build_model("egnn", update_coords=1)
    assert build_model("nequip", radial_mlp=[16, 16], atomic_numbers=[1, 6]).config.radial_mlp == (16, 16)


def test_dtype_and_device_properties():
    model = build_model("egnn", hidden_channels=8, num_layers=1)
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert model.double().dtype == torch.float64


def test_registry_names_every_model():
    """MODELS is the one source of names: each class's ``name`` is its key there."""
    assert all(cls.name == key for key, cls in MODELS.items())
    assert len({cls for cls in MODELS.values()}) == len(MODELS)


_BOND_SIZES = ("hidden_channels", "num_layers")
SIZE_OPTIONS = {  # every model's sizes and counts, none of which may be 0 or negative
    "egnn": ("hidden_channels", "num_layers"),
    "dimenet": ("hidden_channels", "num_blocks", "num_radial", "num_spherical", "num_bilinear"),
    "dimenet++": ("hidden_channels", "num_blocks", "num_radial", "num_spherical", "int_emb_size",
                  "basis_emb_size", "out_emb_channels"),
    "nequip": ("num_features", "num_layers", "num_radial", "envelope_exponent"),
    "mace": ("num_interactions", "num_bessel", "num_polynomial_cutoff"),
    "schnet": ("hidden_channels", "num_filters", "num_interactions", "num_gaussians"),
    "painn": ("hidden_channels", "num_layers", "num_radial"),
    "gcn": _BOND_SIZES, "sage": _BOND_SIZES, "gin": _BOND_SIZES,
    "gat": _BOND_SIZES + ("heads",),
    "mpnn": _BOND_SIZES + ("edge_hidden", "set2set_steps"),
    "gps": _BOND_SIZES + ("heads", "walk_length"),
}
_COMMON_SIZES = ("cutoff", "max_atomic_number", "max_num_neighbors")


def test_size_table_covers_every_model():
    assert set(SIZE_OPTIONS) == set(MODELS)
    for name, options in SIZE_OPTIONS.items():
        assert set(options) <= set(MODELS[name].Config.__dataclass_fields__), name


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("name, option", [(name, option) for name, options in SIZE_OPTIONS.items()
                                          for option in options + _COMMON_SIZES])
def test_non_positive_sizes_are_refused_with_the_option_and_range(name, option, value):
    with pytest.raises(ValueError, match=rf"\b{option} = {value}(\.0)? is out of range: it must be (an integer >=|>) "):
        build_model(name, **{option: value})


def test_option_ranges_allow_what_makes_sense_and_refuse_the_rest():
    # Zero is meaningful for these: a plain EGNN, no residual layers, scalars only.
    assert build_model("egnn", num_radial=0, vector_channels=0, hidden_channels=2, num_layers=1).config.num_radial == 0
    assert build_model("dimenet", num_before_skip=0, num_after_skip=0, num_output_layers=0).config.num_after_skip == 0
    assert build_model("nequip", l_max=0, num_layers=1).config.l_max == 0
    with pytest.raises(ValueError, match=r"EGNNConfig.hidden_channels = 1 is out of range: .*>= 2 \(the readout halves"):
        build_model("egnn", hidden_channels=1)
    with pytest.raises(ValueError, match=r"EGNNConfig.vector_channels = -1 is out of range: it must be an integer >= 0$"):
        build_model("egnn", vector_channels=-1)
    with pytest.raises(ValueError, match=r"SchNetConfig.avg_num_neighbors = 0.0 is out of range: it must be > 0"):
        build_model("schnet", avg_num_neighbors=0)
    with pytest.raises(ValueError, match=r"PaiNNConfig.cutoff = nan is out of range"):
        build_model("painn", cutoff=float("nan"))
    with pytest.raises(ValueError, match=r"NequIPConfig.radial_mlp = \(16, 0\) is out of range"):
        build_model("nequip", radial_mlp=[16, 0])
    with pytest.raises(ValueError, match=r"GPSConfig.dropout = 1.0 is out of range: it must be in \[0, 1\)"):
        build_model("gps", dropout=1.0)
    with pytest.raises(ValueError, match=r"BondGraphConfig.bond_scale = -1.0 is out of range"):
        build_model("gcn", bond_scale=-1.0)
    # The config itself refuses, however the model is made.
    with pytest.raises(ValueError, match="num_layers = -1"):
        EGNN.Config(num_layers=-1)
