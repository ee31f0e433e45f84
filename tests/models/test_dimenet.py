"""DimeNet and DimeNet++ models: the shared model checks, PyG's numbers with copied weights, periodic triplets."""

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.data import Batch, Data

from geognn.data import atoms_to_data, keys
from geognn.data.qm9 import read_qm9_xyz
from geognn.graph import pyg_radius_graph
from geognn.models import MODELS, DimeNet, DimeNetPP, build_model
from geognn.testing import ModelTestMixin

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "qm9_xyz"
HAVE_TORCH_SPARSE = importlib.util.find_spec("torch_sparse") is not None
NEEDS_TORCH_SPARSE = pytest.mark.skipif(
    not HAVE_TORCH_SPARSE,
    reason="PyG's DimeNet needs torch-sparse: pip install --find-links ../shared/wheels torch-sparse torch-scatter",
)

SMALL_PP = {"hidden_channels": 16, "num_blocks": 2, "int_emb_size": 8, "basis_emb_size": 4,
            "out_emb_channels": 16, "num_spherical": 4, "num_radial": 4, "output_init": "glorot_orthogonal"}
SMALL = {"hidden_channels": 16, "num_blocks": 2, "num_bilinear": 4, "num_spherical": 4, "num_radial": 4,
         "output_init": "glorot_orthogonal"}


class TestDimeNetPP(ModelTestMixin):
    model_name = "dimenet++"
    model_kwargs = SMALL_PP


class TestDimeNet(ModelTestMixin):
    model_name = "dimenet"
    model_kwargs = SMALL


class TestDimeNetPPAngleAtI(ModelTestMixin):
    """The reference DimeNet code's angle (at atom i), used by `DimeNet.from_pyg`."""

    model_name = "dimenet++"
    model_kwargs = {**SMALL_PP, "angle": "jik"}


def test_registry_and_small_defaults():
    assert MODELS["dimenet"] is DimeNet and MODELS["dimenet++"] is DimeNetPP
    for name in ("dimenet", "dimenet++"):
        model = build_model(name)
        size = sum(p.numel() for p in model.parameters())
        assert 1e5 < size < 1e6, f"{name}: {size} parameters is not a small default"
        out = model(atoms_to_data(bulk("Si", "diamond", a=5.43)), compute_forces=True, compute_stress=True)
        assert out[keys.ENERGY].shape == (1,) and out[keys.STRESS].shape == (1, 3, 3)
    assert "int_emb_size=32" in repr(build_model("dimenet++"))


def test_zero_output_init_starts_at_zero_energy_but_trains():
    model = build_model("dimenet++", **{**SMALL_PP, "output_init": "zeros"}).double()
    data = atoms_to_data(bulk("NaCl", "rocksalt", a=5.64), dtype=torch.float64)
    out = model(data)
    assert float(out[keys.ENERGY].detach().abs().max()) == 0.0  # the reference starts every output block at zero
    out[keys.ENERGY].sum().backward()
    assert float(model.output_blocks[0].lin.weight.grad.abs().sum()) > 0


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown angle 'ijk'"):
        build_model("dimenet++", angle="ijk")
    with pytest.raises(ValueError, match=r"num_spherical = 1 is out of range: it must be an integer >= 2 \(angles enter"):
        build_model("dimenet", num_spherical=1)
    with pytest.raises(ValueError, match="unknown output_init"):
        build_model("dimenet++", output_init="ones")
    with pytest.raises(ValueError, match="unknown key"):
        build_model("dimenet++", num_bilinear=8)  # a DimeNet field, not DimeNet++'s


@pytest.mark.parametrize("name", ["dimenet", "dimenet++"])
@pytest.mark.parametrize("repeat", [(2, 2, 2), (3, 1, 2)])
def test_supercell_energy_is_extensive_through_periodic_images(name, repeat):
    """E(supercell) = n E(cell) needs every triplet k -> j -> i where k and i are one atom in different images.

    In a one- or two-atom cell with a cutoff beyond the cell, most triplets
    have k and i the same atom; a rule that drops them (PyG's idx_i != idx_k)
    loses angles the supercell keeps, and this equality fails.
    """
    torch.manual_seed(0)
    model = build_model(name, **{**(SMALL_PP if name == "dimenet++" else SMALL), "cutoff": 3.2}).double()
    for atoms in (bulk("Cu", "sc", a=2.1), bulk("NaCl", "rocksalt", a=4.0)):
        atoms.rattle(0.05, seed=1)
        cell = model(atoms_to_data(atoms, dtype=torch.float64), compute_forces=True)
        big = atoms * repeat
        supercell = model(atoms_to_data(big, dtype=torch.float64), compute_forces=True)
        n = int(np.prod(repeat))
        assert torch.allclose(supercell[keys.ENERGY], n * cell[keys.ENERGY], rtol=1e-10, atol=1e-10)
        assert torch.allclose(supercell[keys.FORCES][: len(atoms)], cell[keys.FORCES], atol=1e-10)


@pytest.mark.parametrize("name, options", [("dimenet++", SMALL_PP), ("dimenet", SMALL)])
def test_fused_and_plain_triplet_sums_give_the_same_model(name, options):
    data = atoms_to_data(bulk("Si", "diamond", a=5.43), dtype=torch.float64)
    torch.manual_seed(0)
    fused = build_model(name, **options).double()
    plain = build_model(name, **options).double()
    plain.load_state_dict(fused.state_dict())
    for block in plain.interaction_blocks:
        block.fused = False
    a = fused(data, compute_forces=True, compute_stress=True)
    b = plain(data, compute_forces=True, compute_stress=True)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        assert torch.allclose(a[key], b[key], rtol=1e-12, atol=1e-12), key


# --------------------------------------------------------------------------- PyG with copied weights


def qm9_sample_batch(dtype=torch.float64) -> Batch:
    arrays = read_qm9_xyz(SAMPLES)
    ends = np.cumsum(arrays["num_atoms"])
    structures = []
    for start, end in zip(ends - arrays["num_atoms"], ends):
        z = torch.as_tensor(arrays["z"][start:end])
        pos = torch.as_tensor(arrays["pos"][start:end], dtype=dtype)
        structures.append(Data(z=z, pos=pos))
    return Batch.from_data_list(structures)


@functools.lru_cache(maxsize=None)  # PyG builds its bases with sympy: seconds per model
def pyg_model(variant: str):
    """A PyG model with random, perturbed weights; shared between tests, which only read it."""
    from torch_geometric.nn.models import dimenet as pyg

    torch.manual_seed(0)
    common = dict(hidden_channels=32, out_channels=1, num_blocks=2, num_spherical=7, num_radial=6, cutoff=5.0,
                  output_initializer="glorot_orthogonal")
    if variant == "dimenet++":
        model = pyg.DimeNetPlusPlus(int_emb_size=16, basis_emb_size=8, out_emb_channels=48, **common)
    else:
        model = pyg.DimeNet(num_bilinear=8, **common)
    with torch.no_grad():
        model.rbf.freq.mul_(1.0 + 0.1 * torch.rand_like(model.rbf.freq))  # trained frequencies move
        for block in model.interaction_blocks:
            for param in block.parameters():
                param.add_(0.05 * torch.randn_like(param))  # no bias left at zero
    return model.double()


def pyg_energy_and_forces(model, batch, monkeypatch):
    from torch_geometric.nn.models import dimenet as pyg

    # PyG 2.8 routes radius_graph through pyg-lib, which is not on PyPI; geognn's search finds the same pairs.
    monkeypatch.setattr(pyg, "radius_graph", pyg_radius_graph)
    pos = batch.pos.clone().requires_grad_(True)
    energy = model(batch.z, pos, batch.batch).squeeze(-1)
    forces = -torch.autograd.grad(energy.sum(), pos)[0]
    return energy.detach(), forces


@NEEDS_TORCH_SPARSE
@pytest.mark.parametrize("variant", ["dimenet", "dimenet++"])
def test_from_pyg_gives_pyg_energies_and_forces(variant, monkeypatch):
    batch = qm9_sample_batch()
    theirs = pyg_model(variant)
    ours = (DimeNetPP if variant == "dimenet++" else DimeNet).from_pyg(theirs)
    assert ours.config.max_atomic_number == 94 and ours.config.angle == ("jik" if variant == "dimenet" else "kji")
    energy, forces = pyg_energy_and_forces(theirs, batch, monkeypatch)
    out = ours(batch, compute_forces=True)
    energy_error = float((out[keys.ENERGY].detach() - energy).abs().max() / energy.abs().max())
    force_error = float((out[keys.FORCES].detach() - forces).abs().max() / forces.abs().max())
    assert energy_error <= 1e-8 and force_error <= 1e-8, (energy_error, force_error)
    assert float(energy.abs().min()) > 1e-3  # a non-trivial comparison


@NEEDS_TORCH_SPARSE
def test_from_pyg_refuses_other_models():
    from torch_geometric.nn.models import dimenet as pyg

    with pytest.raises(TypeError, match="DimeNetPlusPlus"):
        DimeNetPP.from_pyg(pyg_model("dimenet"))
    with pytest.raises(TypeError, match="DimeNet"):
        DimeNet.from_pyg(pyg_model("dimenet++"))
    two_outputs = pyg.DimeNetPlusPlus(8, 2, 1, 8, 4, 8, 3, 3)
    with pytest.raises(ValueError, match="out_channels=2"):
        DimeNetPP.from_pyg(two_outputs)


def test_from_pyg_without_torch_geometric_model_is_a_type_error():
    with pytest.raises(TypeError, match="torch_geometric"):
        DimeNetPP.from_pyg(torch.nn.Linear(2, 2))


def test_molecule_without_triplets():
    """H2 has edges but no triplet (the only k -> j -> i goes back to i): energies and forces still work."""
    model = build_model("dimenet++", **SMALL_PP).double()
    out = model(atoms_to_data(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), dtype=torch.float64),
                compute_forces=True)
    assert torch.isfinite(out[keys.ENERGY]).all()
    assert torch.allclose(out[keys.FORCES].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert float(out[keys.FORCES].detach().abs().max()) > 0
