"""The test kit itself: each check must fail on a function or model that is wrong."""

import pytest
import torch
from e3nn import o3

from geognn.data import keys
from geognn.models import EGNN, build_model
from geognn.testing import (
    assert_equivariant,
    check_additivity,
    check_batch_equals_single,
    check_cutoff_smoothness,
    check_forces_finite_differences,
    check_stress_finite_differences,
    molecules,
    periodic_structures,
    random_rotation,
    to_batch,
)

def points(n=6, seed=0):
    return torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_random_rotation_is_orthogonal_with_requested_determinant():
    g = torch.Generator().manual_seed(1)
    for proper in (True, False):
        R = random_rotation(generator=g, proper=proper)
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=R.dtype), atol=1e-14)
        assert abs(float(torch.linalg.det(R)) - (1.0 if proper else -1.0)) < 1e-14


def test_passes_for_equivariant_functions():
    pos = points()
    centred = lambda x: x - x.mean(0)  # noqa: E731
    errors = assert_equivariant(centred, [pos], ["node:position"], ["node:vector"])
    assert set(errors) == {f"{t}/0" for t in ("rotation", "reflection", "translation", "permutation", "combined")}
    assert max(errors.values()) < 1e-12
    gram = lambda x: (x - x.mean(0)).pow(2).sum()  # noqa: E731
    assert_equivariant(gram, [pos], ["node:position"], ["graph:scalar"])


@pytest.mark.parametrize(
    "func, kind_out, failing",
    [
        (lambda x: x[:, 0], "node:scalar", "rotation"),  # a coordinate is not invariant
        (lambda x: x, "node:vector", "translation"),  # positions are not translation invariant
        (lambda x: torch.cumsum((x - x.mean(0)).norm(dim=-1), 0), "node:scalar", "permutation"),
        (lambda x: torch.linalg.cross(x[:1] - x.mean(0), x - x.mean(0)), "node:vector", "reflection"),
    ],
)
def test_fails_for_each_broken_symmetry(func, kind_out, failing):
    with pytest.raises(AssertionError, match=failing):
        assert_equivariant(func, [points()], ["node:position"], [kind_out], transformations=[failing])


def test_pseudovectors_are_distinguished_from_vectors():
    cross = lambda x: torch.linalg.cross(x[:1] - x.mean(0), x - x.mean(0))  # noqa: E731
    # Singles out atom 0, so permutations are left out on purpose.
    assert_equivariant(
        cross, [points()], ["node:position"], ["node:pseudovector"],
        transformations=["rotation", "reflection", "translation"],
    )


def test_irreps_are_read_from_e3nn_style_modules():
    linear = o3.Linear("4x0e + 2x1o + 1x2e", "3x0e + 2x1o + 1x2e").double()
    x = linear.irreps_in.randn(5, -1, dtype=torch.float64)
    assert_equivariant(linear, [x])

    class WrongParity(torch.nn.Module):
        irreps_in = o3.Irreps("1x1o")
        irreps_out = o3.Irreps("1x1e")  # declared pseudovector, returns a vector

        def forward(self, x):
            return x

    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(WrongParity(), [torch.randn(5, 3, dtype=torch.float64)])


def test_permutations_stay_within_structures():
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])

    def per_structure_sum(x, b):
        assert bool((b[1:] >= b[:-1]).all()), "batch must stay sorted"
        return x.new_zeros(2).index_add(0, b, x.pow(2).sum(-1))

    # Depends on the origin, so translations are left out.
    assert_equivariant(
        per_structure_sum,
        [points(7), batch],
        ["node:position", "node:scalar"],
        ["graph:scalar"],
        batch=batch,
        transformations=["rotation", "reflection", "permutation"],
    )


# ---- broken models: each model check must catch its defect


class PositionLeak(EGNN):
    """Adds a raw coordinate to the energy: not rotation invariant."""

    def atomic_energies(self, z, pos, graph):
        out = super().atomic_energies(z, pos, graph)
        return {**out, keys.NODE_ENERGY: out[keys.NODE_ENERGY] + 0.1 * pos[:, 0]}


class BatchLeak(EGNN):
    """Adds the squared mean per-atom energy of the whole batch: couples structures."""

    def atomic_energies(self, z, pos, graph):
        out = super().atomic_energies(z, pos, graph)
        energy = out[keys.NODE_ENERGY]
        return {**out, keys.NODE_ENERGY: energy + energy.mean() ** 2}


class DetachedGeometry(EGNN):
    """Builds messages from detached edge geometry: autograd forces and stress are wrong."""

    def atomic_energies(self, z, pos, graph):
        graph = graph._replace(
            edge_len=graph.edge_len.detach(),
            edge_offset=None if graph.edge_offset is None else graph.edge_offset.detach(),
        )
        return super().atomic_energies(z, pos, graph)


def broken(cls, **kwargs):
    torch.manual_seed(0)
    return cls(cls.Config(hidden_channels=8, num_layers=2, **kwargs)).double().eval()


def test_equivariance_check_catches_position_leak():
    with pytest.raises(AssertionError, match="rotation/energy"):
        assert_equivariant(broken(PositionLeak), to_batch(molecules()[:3]), call_kwargs={"compute_forces": True})


def test_batch_check_catches_coupled_structures():
    with pytest.raises(AssertionError, match="energy of structure"):
        check_batch_equals_single(broken(BatchLeak), molecules()[:3])


def test_additivity_check_catches_coupled_fragments():
    structures = molecules()
    with pytest.raises(AssertionError, match="separated parts"):
        check_additivity(broken(BatchLeak), structures[0], structures[1])


def test_finite_difference_checks_catch_wrong_gradients():
    with pytest.raises(AssertionError, match="forces vs finite differences"):
        check_forces_finite_differences(broken(DetachedGeometry), molecules()[0])
    with pytest.raises(AssertionError, match="stress vs finite differences"):
        check_stress_finite_differences(broken(DetachedGeometry, num_radial=0), periodic_structures()[0])


def test_smoothness_check_catches_a_hard_cutoff():
    class HardCutoff(torch.nn.Module):
        def __init__(self, cutoff):
            super().__init__()
            self.cutoff = cutoff

        def forward(self, edge_len):
            return (edge_len < self.cutoff).to(edge_len.dtype)

    model = broken(EGNN)
    model.envelope = HardCutoff(model.config.cutoff)
    with pytest.raises(AssertionError, match="across the cutoff"):
        check_cutoff_smoothness(model)


def test_egnn_meets_the_float64_acceptance_bound():
    """Issue acceptance: energy, forces and coordinates within 1e-10 on QM9-like molecules."""
    torch.manual_seed(0)
    model = build_model("egnn").double().eval()
    errors = assert_equivariant(model, to_batch(molecules()), call_kwargs={"compute_forces": True}, atol=1e-10)
    for output in (keys.ENERGY, keys.FORCES, keys.UPDATED_POSITIONS):
        assert max(v for k, v in errors.items() if k.endswith("/" + output)) < 1e-10


def test_data_inputs_of_unknown_kind_are_named():
    data = to_batch(molecules()[:2])
    data.charge_density = torch.rand(data.num_nodes, dtype=torch.float64)
    model = broken(EGNN)
    with pytest.raises(ValueError, match="charge_density"):
        assert_equivariant(model, data)
    assert_equivariant(model, data, kinds_in={"charge_density": "node:scalar"})
