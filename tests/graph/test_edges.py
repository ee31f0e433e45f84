"""Edge vectors and lattice offsets: values, batching and gradients in pos and cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geognn.graph import edge_vectors, lattice_offsets, periodic_radius_graph, radius_graph

DTYPE = torch.float64


def triclinic_cell(seed=0):
    rng = np.random.default_rng(seed)
    base = np.diag(rng.uniform(3.0, 4.0, size=3))
    return torch.tensor(base + rng.uniform(-0.8, 0.8, size=(3, 3)), dtype=DTYPE)


def periodic_example(seed=0, n=3, r=4.0, pbc=(True, True, True)):
    cell = triclinic_cell(seed)
    frac = torch.tensor(np.random.default_rng(100 + seed).uniform(-0.5, 1.5, size=(n, 3)), dtype=DTYPE)
    pos = frac @ cell
    pbc = torch.tensor(pbc)
    edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc)
    assert edge_index.shape[1] > 0
    return pos, cell, pbc, edge_index, edge_shift


def test_edge_vectors_molecule():
    rng = np.random.default_rng(1)
    pos_np = rng.normal(size=(7, 3))
    pos = torch.tensor(pos_np, dtype=DTYPE)
    edge_index = radius_graph(pos, 2.0)
    j, i = edge_index.numpy()
    vec, length = edge_vectors(pos, edge_index)
    np.testing.assert_allclose(vec.numpy(), pos_np[j] - pos_np[i], rtol=0, atol=1e-15)
    np.testing.assert_allclose(length.numpy(), np.linalg.norm(pos_np[j] - pos_np[i], axis=1), rtol=1e-15)
    assert vec.dtype == length.dtype == DTYPE
    assert length.shape == (edge_index.shape[1],)


def test_edge_vectors_periodic():
    pos, cell, _, edge_index, edge_shift = periodic_example(seed=2, n=4)
    j, i = edge_index.numpy()
    offset = lattice_offsets(edge_index, edge_shift, cell)
    expected_offset = edge_shift.numpy() @ cell.numpy()
    np.testing.assert_allclose(offset.numpy(), expected_offset, rtol=0, atol=1e-12)
    vec, length = edge_vectors(pos, edge_index, offset)
    expected = pos.numpy()[j] - pos.numpy()[i] + expected_offset
    np.testing.assert_allclose(vec.numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(length.numpy(), np.linalg.norm(expected, axis=1), rtol=1e-13)
    # [3, 3] and [1, 3, 3] cells are the same thing
    assert torch.equal(lattice_offsets(edge_index, edge_shift, cell[None]), offset)


def test_lattice_offsets_use_each_structures_cell():
    cells = torch.stack([triclinic_cell(3), triclinic_cell(4) * 1.3])
    rng = np.random.default_rng(5)
    pos = torch.tensor(rng.uniform(0, 3, size=(5, 3)), dtype=DTYPE)
    batch = torch.tensor([0, 0, 1, 1, 1])
    pbc = torch.tensor([[True, True, True], [True, False, True]])
    edge_index, edge_shift = periodic_radius_graph(pos, 3.5, cells, pbc, batch=batch)
    assert set(batch[edge_index[0]].tolist()) == {0, 1}
    offset = lattice_offsets(edge_index, edge_shift, cells, batch)
    j, i = edge_index.numpy()
    expected = np.einsum("ek,eki->ei", edge_shift.numpy(), cells.numpy()[batch.numpy()[j]])
    np.testing.assert_allclose(offset.numpy(), expected, rtol=0, atol=1e-12)
    vec, length = edge_vectors(pos, edge_index, offset)
    assert float(length.max()) < 3.5
    np.testing.assert_allclose(vec.numpy(), pos.numpy()[j] - pos.numpy()[i] + expected, rtol=0, atol=1e-12)


def test_lattice_offsets_follow_cell_dtype():
    _, cell, _, edge_index, edge_shift = periodic_example(seed=6)
    offset = lattice_offsets(edge_index, edge_shift.float(), cell)
    assert offset.dtype == DTYPE
    assert lattice_offsets(edge_index, edge_shift, cell.float()).dtype == torch.float32


def test_edge_vectors_transform_with_a_strain():
    # pos -> pos (1 + eps), cell -> cell (1 + eps) maps every edge_vec to edge_vec (1 + eps)
    pos, cell, _, edge_index, edge_shift = periodic_example(seed=7, n=4)
    eps = torch.tensor([[0.02, 0.01, -0.03], [0.01, -0.01, 0.02], [-0.03, 0.02, 0.04]], dtype=DTYPE)
    deform = torch.eye(3, dtype=DTYPE) + eps
    vec, _ = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
    strained, _ = edge_vectors(pos @ deform, edge_index, lattice_offsets(edge_index, edge_shift, cell @ deform))
    torch.testing.assert_close(strained, vec @ deform, rtol=0, atol=1e-12)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_gradcheck_pos_and_cell(pbc):
    pos, cell, pbc, edge_index, edge_shift = periodic_example(seed=8, n=3, r=3.5, pbc=pbc)

    def f(pos, cell):
        vec, length = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
        return vec, length, length.pow(2).sum()

    assert torch.autograd.gradcheck(f, (pos.clone().requires_grad_(), cell.clone().requires_grad_()))
    assert torch.autograd.gradgradcheck(f, (pos.clone().requires_grad_(), cell.clone().requires_grad_()))


def test_gradcheck_batched_cells():
    cells = torch.stack([triclinic_cell(9), triclinic_cell(10)])
    pos = torch.tensor(np.random.default_rng(11).uniform(0, 3, size=(4, 3)), dtype=DTYPE)
    batch = torch.tensor([0, 0, 1, 1])
    edge_index, edge_shift = periodic_radius_graph(pos, 3.0, cells, torch.tensor([True, True, True]), batch=batch)

    def f(pos, cells):
        offset = lattice_offsets(edge_index, edge_shift, cells, batch)
        return edge_vectors(pos, edge_index, offset)[1]

    assert torch.autograd.gradcheck(f, (pos.clone().requires_grad_(), cells.clone().requires_grad_()))


def test_analytic_gradients():
    # E = sum_e |v_e|^2 / 2 with v = pos[j] - pos[i] + s @ cell:
    # dE/dpos[k] = sum_{j=k} v - sum_{i=k} v,  dE/dcell = sum_e s_e^T v_e
    pos, cell, _, edge_index, edge_shift = periodic_example(seed=12, n=4)
    pos.requires_grad_()
    cell.requires_grad_()
    vec, length = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
    (0.5 * length.pow(2).sum()).backward()
    v = vec.detach()
    grad_pos = torch.zeros_like(pos).index_add_(0, edge_index[0], v).index_add_(0, edge_index[1], -v)
    torch.testing.assert_close(pos.grad, grad_pos, rtol=0, atol=1e-10)
    torch.testing.assert_close(cell.grad, edge_shift.T @ v, rtol=0, atol=1e-10)
    assert float(cell.grad.abs().max()) > 0


def test_gradients_to_pos_molecule():
    pos = torch.tensor(np.random.default_rng(13).normal(size=(5, 3)), dtype=DTYPE, requires_grad=True)
    edge_index = radius_graph(pos, 2.5)
    assert torch.autograd.gradcheck(lambda p: edge_vectors(p, edge_index), (pos,))
