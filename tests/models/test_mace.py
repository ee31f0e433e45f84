"""MACE: the shared model checks, the symmetric contraction by hand, and equality with mace-torch.

The mace-torch outputs come from ``tests/models/data/mace_reference.pt``, made by
``benchmarks/mace_reference.py`` in mace-torch's own virtual environment (it
pins e3nn 0.4.4; geognn runs on e3nn 0.6).
"""

import math
from pathlib import Path

import pytest
import torch
from ase import Atoms
from e3nn import o3

from geognn.data import atoms_to_data, keys
from geognn.models import MACE, MODELS, build_model
from geognn.models.mace import e3nn_044_sign
from geognn.nn import SymmetricContraction, coupling_paths, wigner_d
from geognn.nn.mace import _contraction_basis, symmetric_monomials
from geognn.testing import ModelTestMixin

SMALL = {"hidden_irreps": "4x0e + 4x1o", "max_ell": 2, "num_bessel": 4, "radial_MLP": (8,), "MLP_irreps": "4x0e",
         "avg_num_neighbors": 8.0, "max_atomic_number": 30}
REFERENCE = Path(__file__).parent / "data" / "mace_reference.pt"


class TestMACECorrelation3(ModelTestMixin):
    model_name = "mace"
    model_kwargs = {**SMALL, "correlation": 3}


class TestMACEL2Correlation2(ModelTestMixin):
    model_name = "mace"
    model_kwargs = {**SMALL, "hidden_irreps": "2x0e + 2x1o + 2x2e", "correlation": 2, "num_interactions": 3}


class TestMACEScalarCorrelation4(ModelTestMixin):
    model_name = "mace"
    model_kwargs = {**SMALL, "hidden_irreps": "4x0e", "max_ell": 1, "correlation": (4, 2)}


def test_registry_and_default_size():
    assert MODELS["mace"] is MACE and MACE.depth_option == "num_interactions"
    model = build_model("mace", atomic_numbers=(1, 6, 7, 8, 9))
    assert 1e4 < sum(p.numel() for p in model.parameters()) < 1e6
    assert [str(p.irreps_out) for p in model.products] == ["32x0e+32x1o", "32x0e"]  # the last layer: scalars


def test_contraction_by_hand_one_channel_degree_2():
    """One channel of a = (s, v) ("0e + 1o"), ν = 2, written out with the Wigner 3j symbols.

    Degree-2 paths into 0e: (0e ⊗ 0e -> 0e) gives s², (1o ⊗ 1o -> 0e) gives
    Σ_m v_m v_m C(0,1,1)_{0mm} = |v|²/√3. Into 1o: (0e ⊗ 1o -> 1o) and
    (1o ⊗ 0e -> 1o) give s v each (√3 C(1,0,1)_{m0n} = δ_mn); 1o ⊗ 1o has even
    parity (0e, 1e, 2e), so it has no path into 1o.
    """
    assert torch.allclose(o3.wigner_3j(1, 0, 1, dtype=torch.float64)[:, 0, :] * math.sqrt(3),
                          torch.eye(3, dtype=torch.float64))
    assert torch.allclose(o3.wigner_3j(0, 1, 1, dtype=torch.float64)[0], torch.eye(3, dtype=torch.float64) / math.sqrt(3))
    layer = SymmetricContraction("1x0e + 1x1o", "1x0e + 1x1o", correlation=2, num_elements=2).double()
    assert [[w.shape[1] for w in per_degree] for per_degree in layer.weights] == [[1, 2], [1, 2]]
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 1])
    s, v = x[:, 0], x[:, 1:]
    (w1, w2), (u1, u2) = [[w.detach()[species, :, 0] for w in per_degree] for per_degree in layer.weights]
    scalar = w1[:, 0] * s + w2[:, 0] * s**2 + w2[:, 1] * (v * v).sum(-1) / math.sqrt(3)
    vector = u1[:, :1] * v + (u2[:, 0] + u2[:, 1]).unsqueeze(-1) * s.unsqueeze(-1) * v
    out = layer(x, species)
    torch.testing.assert_close(out[:, 0], scalar, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out[:, 1:], vector, rtol=1e-13, atol=1e-13)


def test_contraction_equals_dense_coupling_paths():
    """The monomial evaluation equals Σ_p W_p U_p ⋅ a⊗a⊗a with the dense paths, per element and channel."""
    torch.manual_seed(1)
    layer = SymmetricContraction("3x0e + 3x1o + 3x2e", "3x0e + 3x1o", correlation=3, num_elements=3).double()
    x = torch.randn(6, layer.irreps_in.dim, dtype=torch.float64)
    species = torch.tensor([2, 0, 1, 2, 2, 0])
    channels = []
    for c in range(3):
        channels.append(torch.cat([x[:, c:c + 1], x[:, 3 + 3 * c:6 + 3 * c], x[:, 12 + 5 * c:17 + 5 * c]], dim=1))
    out = layer(x, species)
    for k, (ir, start) in enumerate([(o3.Irrep("0e"), 0), (o3.Irrep("1o"), 3)]):
        for c, a in enumerate(channels):
            expected = torch.zeros(6, ir.dim, dtype=torch.float64)
            for degree, weight in enumerate(layer.weights[k], start=1):
                for p, u in enumerate(coupling_paths("0e + 1o + 2e", ir, degree)):
                    letters = "abc"[:degree]
                    value = torch.einsum(f"m{letters}," + ",".join(f"n{l}" for l in letters) + "->nm", u,
                                         *[a] * degree)
                    expected += weight.detach()[species, p, c].unsqueeze(-1) * value
            torch.testing.assert_close(out[:, start + c * ir.dim:start + (c + 1) * ir.dim], expected,
                                       rtol=1e-12, atol=1e-12)


def test_contraction_equivariant_and_basis_cached():
    calls = _contraction_basis.cache_info().misses
    layer = SymmetricContraction("2x0e + 2x1o + 2x2e + 2x3o", "2x0e + 2x1o + 2x2e", correlation=3, num_elements=2)
    again = SymmetricContraction("2x0e + 2x1o + 2x2e + 2x3o", "2x0e + 2x1o + 2x2e", correlation=3, num_elements=5)
    assert _contraction_basis.cache_info().misses - calls <= 3  # one per output irrep, shared by the second layer
    layer, again = layer.double(), again.double()
    torch.manual_seed(2)
    x = torch.randn(7, layer.irreps_in.dim, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0, 0, 1, 1])
    for rotation in (o3.rand_matrix(dtype=torch.float64), -o3.rand_matrix(dtype=torch.float64)):
        rotated = layer(x @ wigner_d(layer.irreps_in, rotation).T, species)
        expected = layer(x, species) @ wigner_d(layer.irreps_out, rotation).T
        assert (rotated - expected).abs().max() < 1e-12


def test_monomial_counts():
    for dim, degree in ((4, 2), (9, 3), (16, 3), (9, 4)):
        prefix, last, of_tuple = symmetric_monomials(dim, degree)
        assert len(last) == math.comb(dim + degree - 1, degree) and of_tuple.numel() == dim**degree


@pytest.mark.parametrize("options, message", [
    ({"hidden_irreps": "8x1o + 8x0e"}, "hidden_irreps"),
    ({"hidden_irreps": "8x0e + 4x1o"}, "same multiplicity"),
    ({"hidden_irreps": "banana"}, "not an irreps string"),
    ({"correlation": 5}, "correlation"),
    ({"correlation": (3, 2, 1)}, "one per layer"),
    ({"max_ell": 4}, "max_ell"),
    ({"MLP_irreps": "4x1o"}, "MLP_irreps"),
    ({"num_interactions": 0}, "num_interactions"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_model("mace", **options)


def test_unknown_element_refused():
    model = build_model("mace", **{**SMALL, "atomic_numbers": (1, 8)}).double()
    with pytest.raises(ValueError, match=r"elements \[6\] are not among"):
        model(atoms_to_data(Atoms("CH4", positions=[[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6],
                                                        [0.6, -0.6, -0.6], [-0.6, 0.6, -0.6]]), dtype=torch.float64))


# --- equality with mace-torch -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, weights_only=True)


def test_e3nn_044_wigner_3j_signs(reference):
    """e3nn 0.4.4's Wigner 3j symbols are 0.6's times `e3nn_044_sign`: whole for l <= 3, and the largest
    component of every symbol up to l = 11 (all that 0.4.4 has)."""
    for key, old in reference["wigner_3j"].items():
        l1, l2, l3 = map(int, key.split(","))
        new = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        torch.testing.assert_close(old, e3nn_044_sign(l1, l2, l3) * new, rtol=0, atol=1e-12)
    flipped = 0
    for key, (index, value) in reference["wigner_3j_largest"].items():
        l1, l2, l3 = map(int, key.split(","))
        new = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).flatten()[int(index)]
        assert abs(value - e3nn_044_sign(l1, l2, l3) * new) < 1e-12 and abs(value) > 0.01, key
        flipped += e3nn_044_sign(l1, l2, l3) < 0
    assert len(reference["wigner_3j_largest"]) == 870 and flipped == 188  # every triple with l <= 11
    with pytest.raises(ValueError, match="no Wigner 3j symbol for l > 11"):
        e3nn_044_sign(12, 1, 12)


def test_spherical_harmonics_agree_with_e3nn_044(reference):
    sh = reference["spherical_harmonics"]
    new = o3.spherical_harmonics(list(range(5)), sh["vectors"], normalize=True, normalization="component")
    torch.testing.assert_close(new, sh["values"], rtol=0, atol=1e-12)


def _structures(reference):
    out = []
    for s in reference["structures"]:
        atoms = Atoms(numbers=s["numbers"].numpy(), positions=s["positions"].numpy(), cell=s["cell"].numpy(),
                      pbc=s["pbc"].numpy())
        out.append(atoms)
    return out


@pytest.mark.parametrize("name", ["l1_corr3", "l2_corr2", "scalar_corr4", "one_layer_corr1"])
def test_from_mace_equals_mace_torch(reference, name):
    """Energies, forces and (periodic cell) stress of mace-torch's ScaleShiftMACE, float64, to 1e-10 relative."""
    entry = reference["models"][name]
    model = MACE.from_mace(entry["state_dict"], entry["hyperparameters"])
    assert model.dtype == torch.float64
    for atoms, expected in zip(_structures(reference), entry["outputs"]):
        data = atoms_to_data(atoms, dtype=torch.float64)
        periodic = bool(atoms.pbc.any())
        out = model(data, compute_forces=True, compute_stress=periodic)
        scale = expected["energy"].abs().max()
        assert (out[keys.ENERGY] - expected["energy"]).abs().max() <= 1e-10 * scale
        force_scale = expected["forces"].abs().max()
        assert (out[keys.FORCES] - expected["forces"]).abs().max() <= 1e-10 * force_scale
        if periodic:
            stress = expected["stress"].reshape(1, 3, 3)
            assert (out[keys.STRESS] - stress).abs().max() <= 1e-10 * stress.abs().max()


def test_from_mace_refuses_unknown_weights(reference):
    entry = reference["models"]["l1_corr3"]
    state = dict(entry["state_dict"], **{"pair_repulsion_fn.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="does not know these mace-torch weights: \\['pair_repulsion_fn.weight'\\]"):
        MACE.from_mace(state, entry["hyperparameters"])
    wrong = dict(entry["hyperparameters"], hidden_irreps="4x0e + 4x1o")
    with pytest.raises(ValueError, match="are the hyperparameters those of the mace-torch model"):
        MACE.from_mace(entry["state_dict"], wrong)



def test_mace_checkpoint_drives_the_ase_calculator(tmp_path):
    """A MACE checkpoint (tuple and irreps-string options) loads, and the calculator's energy, forces and
    stress on a periodic cell are the model's; stress equals a finite difference of the energy in strain."""
    from ase.build import bulk

    from geognn.calculator import GeoGNNCalculator
    from geognn.models import save_checkpoint
    from geognn.models.checkpoint import FORMAT_VERSION

    torch.manual_seed(3)
    model = build_model("mace", **{**SMALL, "correlation": (3, 2), "atomic_numbers": (11, 17)}).double()
    checkpoint = {"format_version": FORMAT_VERSION, "model_name": "mace", "model_config": vars(model.config).copy(),
                  "state_dict": model.state_dict(), "normalization": {}, "train_config": {}, "metrics": {}}
    path = save_checkpoint(checkpoint, tmp_path / "mace.pt")
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    atoms.calc = GeoGNNCalculator.from_checkpoint(path, dtype="float64")
    out = model.eval()(atoms_to_data(atoms, dtype=torch.float64), compute_forces=True, compute_stress=True)
    assert abs(atoms.get_potential_energy() - float(out[keys.ENERGY])) < 1e-10
    assert abs(atoms.get_forces() - out[keys.FORCES].detach().numpy()).max() < 1e-10
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5, voigt=True)
    assert abs(atoms.get_stress() - numerical).max() < 1e-7
