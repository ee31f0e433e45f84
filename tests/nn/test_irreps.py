"""One convention across families: irreps tensors and (h, v) channels, checked against e3nn itself."""

import pytest
import torch
from e3nn import o3

from geognn.nn.irreps import join_scalars_vectors, split_scalars_vectors, wigner_d

DTYPE = torch.float64


def rotations():
    torch.manual_seed(0)
    return [o3.rand_matrix(dtype=DTYPE), -o3.rand_matrix(dtype=DTYPE)]  # proper, and with a reflection


def test_e3nn_orders_l1_as_xyz_and_spherical_harmonics_agree():
    """The fact the whole convention rests on (older e3nn used y, z, x): a 1o feature rotates as R x."""
    for rotation in rotations():
        assert torch.allclose(o3.Irreps("1o").D_from_matrix(rotation), rotation, atol=1e-6)
        assert torch.allclose(o3.Irreps("1e").D_from_matrix(rotation), rotation * torch.det(rotation), atol=1e-6)
    vec = torch.randn(10, 3, dtype=DTYPE)
    sh = o3.spherical_harmonics("1o", vec, normalize=True, normalization="component")
    assert torch.allclose(sh, 3**0.5 * vec / vec.norm(dim=-1, keepdim=True), atol=1e-15)


@pytest.mark.parametrize("exact", [True, False])
def test_joined_channels_rotate_as_the_irreps_tensor(exact):
    """cat([h, v.reshape(N, -1)]) rotated by D equals (h, v R^T) joined: both ways, e3nn's D and the exact one."""
    h, v = torch.randn(4, 5, dtype=DTYPE), torch.randn(4, 3, 3, dtype=DTYPE)
    x, irreps = join_scalars_vectors(h, v)
    assert str(irreps) == "5x0e+3x1o"
    for rotation in rotations():
        d = wigner_d(irreps, rotation) if exact else irreps.D_from_matrix(rotation)
        atol = 1e-13 if exact else 1e-6
        h_rot, v_rot = split_scalars_vectors(x @ d.T, irreps)
        assert torch.allclose(h_rot, h, atol=atol)
        assert torch.allclose(v_rot, v @ rotation.T, atol=atol)
        joined, _ = join_scalars_vectors(h, v @ rotation.T)
        assert torch.allclose(joined, x @ d.T, atol=atol)


def test_split_takes_only_the_requested_parity_and_skips_higher_l():
    irreps = o3.Irreps("2x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x1o")
    x = torch.randn(3, irreps.dim, dtype=DTYPE)
    h, v = split_scalars_vectors(x, irreps)
    assert h.shape == (3, 2) and v.shape == (3, 3, 3)
    assert torch.equal(v[:, 2], x[:, -3:])  # the trailing 1o block, after the 2e
    _, pseudo = split_scalars_vectors(x, irreps, vector_parity=1)
    assert pseudo.shape == (3, 1, 3) and torch.equal(pseudo[:, 0], x[:, 9:12])  # after 2x0e, 0o, 2x1o
    reflection = -torch.eye(3, dtype=DTYPE)
    _, v_reflected = split_scalars_vectors(x @ wigner_d(irreps, reflection).T, irreps, vector_parity=1)
    assert torch.allclose(v_reflected, pseudo, atol=1e-14)  # pseudovectors do not flip under inversion
    with pytest.raises(ValueError, match="has dimension"):
        split_scalars_vectors(x[:, :-1], irreps)
    with pytest.raises(ValueError, match="expected h"):
        join_scalars_vectors(torch.zeros(3, 2), torch.zeros(3, 2))


@pytest.mark.parametrize("irreps", ["0e + 1o + 2e + 3o", "2x1e + 0o + 2x2o + 3e"])
def test_wigner_d_is_the_exact_representation(irreps):
    """Close to e3nn's D (~2e-7 apart in e3nn 0.6), orthogonal, and a homomorphism to float64 rounding."""
    irreps = o3.Irreps(irreps)
    first, second = rotations()
    d = wigner_d(irreps, first)
    assert torch.allclose(d, irreps.D_from_matrix(first), atol=1e-6)
    assert torch.allclose(d @ d.T, torch.eye(irreps.dim, dtype=DTYPE), atol=1e-13)
    assert torch.allclose(wigner_d(irreps, first @ second), d @ wigner_d(irreps, second), atol=1e-13)
    vec = torch.randn(6, 3, dtype=DTYPE)
    sh_irreps = o3.Irreps.spherical_harmonics(3)
    sh = o3.spherical_harmonics(sh_irreps, vec, normalize=True)
    rotated = o3.spherical_harmonics(sh_irreps, vec @ first.T, normalize=True)
    assert torch.allclose(rotated, sh @ wigner_d(sh_irreps, first).T, atol=1e-13)
