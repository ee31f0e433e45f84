"""NequIP model: the shared model checks for l_max 1, 2, 3 (both parity settings), molecules and periodic cells."""

import pytest
import torch
from ase.build import bulk

from geognn.data import atoms_to_data, keys
from geognn.models import MODELS, NequIP, build_model
from geognn.models.nequip import hidden_irreps
from geognn.testing import ModelTestMixin

SMALL = {"num_features": 4, "num_layers": 2, "num_radial": 4, "radial_mlp": (8,), "avg_num_neighbors": 8.0,
         "max_atomic_number": 30}


class TestNequIPLmax1(ModelTestMixin):
    model_name = "nequip"
    model_kwargs = {**SMALL, "l_max": 1}


class TestNequIPLmax2(ModelTestMixin):
    model_name = "nequip"
    model_kwargs = {**SMALL, "l_max": 2, "parity": False}


class TestNequIPLmax3(ModelTestMixin):
    model_name = "nequip"
    model_kwargs = {**SMALL, "l_max": 3, "num_layers": 2}


def test_registry_default_and_issue_size():
    assert MODELS["nequip"] is NequIP
    model = build_model("nequip")
    assert 1e4 < sum(p.numel() for p in model.parameters()) < 1e6
    out = model(atoms_to_data(bulk("Si", "diamond", a=5.43)), compute_forces=True, compute_stress=True)
    assert out[keys.STRESS].shape == (1, 3, 3)
    big = build_model("nequip", l_max=2, num_features=32, num_layers=4, cutoff=5.0, avg_num_neighbors=15.0,
                      atomic_numbers=(1, 6, 7, 8, 9))
    assert str(big.gates[-2].irreps_out) == str(hidden_irreps(32, 2, True))  # every l and parity reached by layer 3
    assert str(big.gates[-1].irreps_out) == "32x0e"  # the last layer keeps scalars only, as nequip's
    assert big.convolutions[0].self_connection is None and big.convolutions[1].self_connection is not None


def test_hidden_irreps_and_unknown_elements():
    assert str(hidden_irreps(8, 2, True)) == "8x0e+8x0o+8x1e+8x1o+8x2e+8x2o"
    assert str(hidden_irreps(8, 2, False)) == "8x0e+8x1o+8x2e"
    model = build_model("nequip", **SMALL, atomic_numbers=(1, 8)).double()
    water = atoms_to_data(bulk("NaCl", "rocksalt", a=5.64), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"elements \[11, 17\] are not among"):
        model(water)
    with pytest.raises(ValueError, match="atomic_numbers must be distinct"):
        build_model("nequip", atomic_numbers=(1, 1))


def test_compiled_model_matches_eager():
    """torch.compile (inductor) of `atomic_energies`: eager's energies and forces, and eager's gradients.

    Inference with forces (one derivative) and an energy-only training step
    (the `compile: true` recipe option). Force *training* needs the derivative
    of a derivative, which torch.compile's backward does not provide
    (create_graph=True is refused), so the trainer refuses compile with forces.
    Also guards against Irreps objects reaching traced code (e3nn's Irreps
    refuse len(), which dynamo's guards call).
    """
    from geognn.testing import molecules, to_batch

    torch.manual_seed(0)
    model = build_model("nequip", **{**SMALL, "l_max": 2})
    batch = to_batch(molecules()[:3], dtype=torch.float32)
    model.eval()
    eager = model(batch, compute_forces=True)
    eager_grads = torch.autograd.grad(model.train()(batch)[keys.ENERGY].square().sum(), list(model.parameters()))
    model.atomic_energies = torch.compile(model.atomic_energies, dynamic=True)
    model.eval()
    compiled = model(batch, compute_forces=True)
    compiled_grads = torch.autograd.grad(model.train()(batch)[keys.ENERGY].square().sum(), list(model.parameters()))
    pairs = [(compiled[keys.ENERGY], eager[keys.ENERGY]), (compiled[keys.FORCES], eager[keys.FORCES]),
             *zip(compiled_grads, eager_grads)]
    for got, expected in pairs:  # float32 agreement, relative to each tensor's scale (forces are small at init)
        assert expected.abs().max() > 0
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max() + 1e-7


class TestNequIPOneHotSelfConnection(ModelTestMixin):
    """The paper's self-connection on the species one-hot, rather than nequip 0.19's learned embedding."""

    model_name = "nequip"
    model_kwargs = {**SMALL, "l_max": 1, "node_attr": "one_hot", "resnet": True}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_in_float64_and_float32():
    """The same model and molecules on CUDA: energies and forces equal the CPU's (float64 to 1e-10)."""
    from geognn.testing import molecules, to_batch

    torch.manual_seed(0)
    model = build_model("nequip", **{**SMALL, "l_max": 2})
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        results = []
        for device in ("cpu", "cuda"):
            batch = to_batch(molecules()[:4], dtype=dtype).to(device)
            out = model.to(device=device, dtype=dtype).eval()(batch, compute_forces=True)
            results.append((out[keys.ENERGY].cpu(), out[keys.FORCES].cpu()))
        for got, expected in zip(results[1], results[0]):
            assert (got - expected).abs().max() <= tolerance * max(1.0, float(expected.abs().max()))
