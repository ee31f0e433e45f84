"""Radius graphs checked against an O(N^2) brute-force reference and against ASE.

The edge convention (see `geognn.data.keys`): ``edge_index[0]`` is the sender
j, ``edge_index[1]`` the receiver i, and
``edge_vec = pos[j] - pos[i] + edge_shift @ cell``. Every random case below
compares the *exact* set of edges (and lattice shifts) with the reference.
"""

from __future__ import annotations

import functools
import itertools
import sys
import warnings

import numpy as np
import pytest
import torch

from brute_force import brute_molecule, brute_periodic, edge_set

from geognn import graph
from geognn.graph import edge_vectors, lattice_offsets
from geognn.graph.neighbors import NEIGHBOR_BACKENDS

# Every test here runs once per registered backend (skipped where its library is not
# installed), through these two names, which the fixture below binds to that backend.
radius_graph = periodic_radius_graph = None


@pytest.fixture(autouse=True, params=list(NEIGHBOR_BACKENDS))
def backend(request, monkeypatch):
    backend = NEIGHBOR_BACKENDS[request.param]
    if not backend.is_installed():
        pytest.skip(f"the {backend.name} backend is not installed ({backend.install})")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "radius_graph", functools.partial(graph.radius_graph, backend=backend.name))
    monkeypatch.setattr(module, "periodic_radius_graph",
                        functools.partial(graph.periodic_radius_graph, backend=backend.name))
    return backend.name


DTYPE = torch.float64
PBC_PATTERNS = [tuple(p) for p in itertools.product([True, False], repeat=3)]  # all 8, incl. FFF


# --------------------------------------------------------------------------- helpers


def assert_sorted_by_receiver_then_sender(edge_index, num_nodes):
    key = edge_index[1] * num_nodes + edge_index[0]
    assert bool((key[1:] >= key[:-1]).all()), "edges must be sorted by receiver, then sender"


def check_molecule_graph(pos, r, batch=None, max_num_neighbors=None):
    edge_index = radius_graph(pos, r, batch=batch, max_num_neighbors=max_num_neighbors)
    assert edge_index.dtype == torch.long and edge_index.shape[0] == 2
    got = edge_set(edge_index)
    assert len(got) == len(set(got)), "duplicate edges"
    expected = brute_molecule(pos.numpy(), r, None if batch is None else batch.numpy())
    assert set(got) == expected
    assert all(j != i for j, i in got), "self-loop in a molecular graph"
    assert {(i, j) for j, i in got} == set(got), "edge without its reverse"
    assert_sorted_by_receiver_then_sender(edge_index, pos.shape[0])
    if edge_index.shape[1]:
        _, length = edge_vectors(pos, edge_index)
        assert float(length.max()) < r
    return edge_index


def check_periodic_graph(pos, r, cell, pbc, batch=None):
    edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, batch=batch)
    assert edge_index.dtype == torch.long and edge_index.shape[0] == 2
    assert edge_shift.shape == (edge_index.shape[1], 3)
    assert edge_shift.dtype == pos.dtype
    assert torch.equal(edge_shift, torch.round(edge_shift)), "edge_shift must hold integers"
    pbc_b = torch.as_tensor(pbc).reshape(-1, 3)
    cell_b = cell.reshape(-1, 3, 3)
    structure = torch.zeros(pos.shape[0], dtype=torch.long) if batch is None else batch
    periodic_of_edge = pbc_b[structure[edge_index[0]]]
    assert not bool(edge_shift[~periodic_of_edge].any()), "non-zero shift along a non-periodic direction"

    got = edge_set(edge_index, edge_shift)
    assert len(got) == len(set(got)), "duplicate edges"
    assert got == sorted(got, key=lambda e: (e[1], e[0], *e[2:])), "edges must be sorted by receiver, sender, shift"
    expected = brute_periodic(pos.numpy(), r, cell_b.numpy(), pbc_b.numpy(), None if batch is None else batch.numpy())
    assert set(got) == expected
    reversed_ = {(i, j, -s0, -s1, -s2) for j, i, s0, s1, s2 in got}
    assert reversed_ == set(got), "edge (j, i, s) without its reverse (i, j, -s)"
    assert_sorted_by_receiver_then_sender(edge_index, pos.shape[0])
    if edge_index.shape[1]:
        offset = lattice_offsets(edge_index, edge_shift, cell_b, batch)
        vec, length = edge_vectors(pos, edge_index, offset)
        assert float(length.max()) < r
        assert float(length.min()) > 0
    return edge_index, edge_shift


def random_cell(rng, lo=2.5, hi=5.0, min_relative_volume=0.35):
    """Randomly oriented triclinic cell with random angles, not too flat."""
    while True:
        lengths = rng.uniform(lo, hi, size=3)
        dirs = rng.normal(size=(3, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        cell = dirs * lengths[:, None]
        if abs(np.linalg.det(cell)) / lengths.prod() > min_relative_volume:
            return cell


def random_periodic_structure(rng, pbc, zero_nonperiodic, unwrapped, max_atoms=10):
    """(pos, cell, cutoff) for one structure; `cell` has zero rows off-pbc when asked."""
    pbc = np.asarray(pbc, dtype=bool)
    generator = random_cell(rng)
    n = int(rng.integers(1, max_atoms + 1))
    frac = rng.uniform(0.0, 1.0, size=(n, 3))
    if unwrapped:  # atoms outside the cell along the periodic directions
        frac[:, pbc] = rng.uniform(-2.0, 3.0, size=(n, int(pbc.sum())))
    pos = frac @ generator
    cell = generator.copy()
    if zero_nonperiodic:
        cell[~pbc] = 0.0
    else:  # an arbitrary vector along non-periodic directions: must be ignored
        cell[~pbc] = rng.normal(size=(int((~pbc).sum()), 3)) * 3.0
    lengths = np.linalg.norm(generator, axis=1)
    # from well below to well above the cell size (own images, several images of a neighbour)
    r = float(rng.uniform(0.3, 1.5) * lengths.max())
    return pos, cell, r


# --------------------------------------------------------------------------- edge direction


def test_edge_direction_convention_molecule():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)  # receiver 0, sender 1
    edge_index = radius_graph(pos, 1.5)
    assert edge_index.tolist() == [[1, 0], [0, 1]]  # sorted by receiver: (1 -> 0), (0 -> 1)
    vec, length = edge_vectors(pos, edge_index)
    # edge (sender 1 -> receiver 0): edge_vec = pos[1] - pos[0] = +x
    assert vec[0].tolist() == [1.0, 0.0, 0.0]
    assert vec[1].tolist() == [-1.0, 0.0, 0.0]
    assert length.tolist() == [1.0, 1.0]


def test_edge_direction_convention_periodic():
    cell = torch.eye(3, dtype=DTYPE) * 10.0
    pos = torch.tensor([[0.5, 0.0, 0.0], [9.5, 0.0, 0.0]], dtype=DTYPE)
    edge_index, edge_shift = periodic_radius_graph(pos, 2.0, cell, torch.tensor([True, False, False]))
    assert edge_index.tolist() == [[1, 0], [0, 1]]
    # sender 1 at x=9.5 is seen by receiver 0 through its image at 9.5 - 10 = -0.5
    assert edge_shift.tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    vec, length = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
    assert torch.allclose(vec, torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE))
    assert torch.allclose(length, torch.ones(2, dtype=DTYPE))


def test_cutoff_is_strict():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)
    assert radius_graph(pos, 1.0).shape == (2, 0)
    assert radius_graph(pos, 1.0 + 1e-9).shape == (2, 2)
    cell = torch.eye(3, dtype=DTYPE) * 2.0
    one = pos[:1]
    edge_index, _ = periodic_radius_graph(one, 2.0, cell, torch.tensor([True, True, True]))
    assert edge_index.shape == (2, 0)  # images exactly at r are excluded
    edge_index, _ = periodic_radius_graph(one, 2.0 + 1e-9, cell, torch.tensor([True, True, True]))
    assert edge_index.shape == (2, 6)


def test_cutoff_is_strict_in_a_batch():
    # structures of a batch may be moved apart before the search (vesin): pairs at the cutoff
    # are still decided on the positions as given
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 5, 5], [5.0, 5, 6], [5.0, 5, 7.5]], dtype=DTYPE)
    batch = torch.tensor([0, 0, 1, 1, 1])
    assert radius_graph(pos, 1.0, batch).shape == (2, 0)
    assert edge_set(radius_graph(pos, 1.0 + 1e-12, batch)) == [(1, 0), (0, 1), (3, 2), (2, 3)]
    assert radius_graph(pos, 1.5, batch).shape == (2, 4)  # 3-4 is 1.5 apart
    assert radius_graph(pos, 1.5 + 1e-12, batch).shape == (2, 6)


# --------------------------------------------------------------------------- random molecules


@pytest.mark.parametrize("seed", range(30))
def test_molecules_match_brute_force(seed):
    rng = np.random.default_rng(1000 + seed)
    num_structures = int(rng.integers(1, 5))
    sizes = rng.integers(1, 41, size=num_structures)
    if seed % 5 == 0:
        sizes[0] = 1  # a lone atom: no edges, but must not break batching
    box = rng.uniform(2.0, 8.0)
    # all structures occupy the same region of space: only `batch` separates them
    pos = torch.tensor(rng.uniform(0.0, box, size=(int(sizes.sum()), 3)), dtype=DTYPE)
    batch = torch.repeat_interleave(torch.arange(num_structures), torch.as_tensor(sizes))
    r = float(rng.uniform(0.8, 3.0))
    check_molecule_graph(pos, r, batch=batch if num_structures > 1 or seed % 2 else None)


def test_molecule_batch_equals_separate_calls():
    rng = np.random.default_rng(7)
    sizes = [5, 12, 1, 9]
    parts = [torch.tensor(rng.normal(size=(n, 3)), dtype=DTYPE) for n in sizes]
    pos = torch.cat(parts)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    together = edge_set(radius_graph(pos, 1.7, batch=batch))
    separate, offset = [], 0
    for part in parts:
        separate += [(j + offset, i + offset) for j, i in edge_set(radius_graph(part, 1.7))]
        offset += part.shape[0]
    assert together == sorted(separate, key=lambda e: (e[1], e[0]))
    assert len(together) > 0


# --------------------------------------------------------------------------- random periodic


@pytest.mark.parametrize("seed", range(64))
def test_periodic_matches_brute_force(seed):
    rng = np.random.default_rng(2000 + seed)
    pbc = PBC_PATTERNS[seed % 8]
    zero_nonperiodic = (seed // 8) % 2 == 0
    unwrapped = (seed // 16) % 4 != 0
    pos, cell, r = random_periodic_structure(rng, pbc, zero_nonperiodic, unwrapped)
    pos, cell = torch.tensor(pos, dtype=DTYPE), torch.tensor(cell, dtype=DTYPE)
    # alternate between the single-structure shapes ([3, 3], [3]) and batched ones ([1, 3, 3], [1, 3])
    if seed % 2:
        check_periodic_graph(pos, r, cell, torch.tensor(pbc))
    else:
        check_periodic_graph(pos, r, cell[None], torch.tensor([pbc]), batch=torch.zeros(len(pos), dtype=torch.long))


@pytest.mark.parametrize("seed", range(16))
def test_periodic_batch_matches_brute_force(seed):
    rng = np.random.default_rng(3000 + seed)
    num_structures = int(rng.integers(2, 5))
    positions, cells, pbcs, sizes = [], [], [], []
    r = float(rng.uniform(1.5, 5.0))  # one cutoff for structures of different sizes
    for b in range(num_structures):
        pbc = PBC_PATTERNS[int(rng.integers(0, 8))]
        pos, cell, _ = random_periodic_structure(rng, pbc, bool(rng.integers(0, 2)), bool(rng.integers(0, 2)), max_atoms=8)
        positions.append(pos)
        cells.append(cell)
        pbcs.append(pbc)
        sizes.append(len(pos))
    pos = torch.tensor(np.concatenate(positions), dtype=DTYPE)
    cell = torch.tensor(np.stack(cells), dtype=DTYPE)
    pbc = torch.tensor(pbcs)
    batch = torch.repeat_interleave(torch.arange(num_structures), torch.tensor(sizes))
    edge_index, edge_shift = check_periodic_graph(pos, r, cell, pbc, batch=batch)
    assert bool((batch[edge_index[0]] == batch[edge_index[1]]).all())

    # ... and the batch is the union of the single-structure graphs
    separate, offset = [], 0
    for b in range(num_structures):
        sl = slice(offset, offset + sizes[b])
        ei, es = periodic_radius_graph(pos[sl], r, cell[b], pbc[b])
        separate += [(j + offset, i + offset, *s) for j, i, *s in edge_set(ei, es)]
        offset += sizes[b]
    assert edge_set(edge_index, edge_shift) == separate


def test_own_images_and_several_images_of_a_neighbour():
    a = 2.0
    cell = torch.eye(3, dtype=DTYPE) * a
    pbc = torch.tensor([True, True, True])
    r = 3.1 * a
    one = torch.zeros(1, 3, dtype=DTYPE)
    edge_index, edge_shift = periodic_radius_graph(one, r, cell, pbc)
    # all non-zero lattice points within r: |n| < 3.1 over integer vectors
    expected = {s for s in itertools.product(range(-4, 5), repeat=3) if 0 < sum(x * x for x in s) < 3.1**2}
    assert set(edge_set(edge_index, edge_shift)) == {(0, 0, *s) for s in expected}
    assert edge_index.shape[1] == len(expected) > 100  # > 100 neighbours kept with the default None

    two = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.3, 0.1]], dtype=DTYPE)
    edge_index, edge_shift = check_periodic_graph(two, r, cell, pbc)
    pairs = edge_set(edge_index)
    assert pairs.count((1, 0)) > 10  # many images of the same neighbour
    assert pairs.count((0, 0)) == pairs.count((1, 1)) == len(expected)


@pytest.mark.parametrize(
    "pbc,M",
    [
        ((True, True, True), [[1, 0, 0], [3, 1, 0], [-2, 1, 1]]),
        ((True, True, True), [[1, 4, 0], [0, 1, 0], [0, -3, 1]]),
        ((True, True, False), [[1, 0, 0], [-5, 1, 0], [0, 0, 1]]),
    ],
)
def test_graph_does_not_depend_on_the_cell_basis(pbc, M):
    # cell' = M @ cell (M unimodular) is the same lattice with a skewed basis; the
    # shifts map as s = s' @ M and the edge sets must coincide exactly
    rng = np.random.default_rng(31)
    pos_np, cell_np, _ = random_periodic_structure(rng, pbc, True, True, max_atoms=5)
    M = np.array(M)
    assert round(abs(np.linalg.det(M))) == 1
    pos, cell, pbc_t = torch.tensor(pos_np, dtype=DTYPE), torch.tensor(cell_np, dtype=DTYPE), torch.tensor(pbc)
    r = 6.3
    reduced = set(edge_set(*periodic_radius_graph(pos, r, cell, pbc_t)))
    skewed_ei, skewed_es = periodic_radius_graph(pos, r, torch.tensor(M, dtype=DTYPE) @ cell, pbc_t)
    mapped = {(j, i, *(np.array(s) @ M).tolist()) for j, i, *s in edge_set(skewed_ei, skewed_es)}
    assert mapped == reduced
    assert len(reduced) == skewed_ei.shape[1] > 0


def random_shear(rng, pbc, size=6):
    """A random unimodular integer matrix mixing only periodic directions (entries up to ``size``)."""
    M = np.eye(3, dtype=int)
    periodic = [k for k in range(3) if pbc[k]]
    for _ in range(4):
        if len(periodic) < 2:
            break
        i, j = rng.choice(periodic, size=2, replace=False)
        E = np.eye(3, dtype=int)
        E[i, j] = int(rng.integers(-size, size + 1))
        M = E @ M
    return M


@pytest.mark.parametrize("seed", range(12))
def test_random_sheared_cells_give_identical_edges(seed):
    """A strongly sheared basis of the same lattice is searched in its reduced form: the edge
    set, shifts mapped back (s = s' @ M), equals the unsheared cell's, and equals brute force."""
    rng = np.random.default_rng(100 + seed)
    pbc = PBC_PATTERNS[seed % 7]  # every pattern with at least one periodic direction
    pos_np, cell_np, r = random_periodic_structure(rng, pbc, seed % 2 == 0, True, max_atoms=6)
    r = min(r, 4.0)
    M = random_shear(rng, pbc)
    pos, cell, pbc_t = torch.tensor(pos_np, dtype=DTYPE), torch.tensor(cell_np, dtype=DTYPE), torch.tensor(pbc)
    skewed = torch.tensor(M, dtype=DTYPE) @ cell
    reference = set(edge_set(*periodic_radius_graph(pos, r, cell, pbc_t)))
    edge_index, edge_shift = check_periodic_graph(pos, r, skewed, pbc_t)
    mapped = {(j, i, *(np.array(s) @ M).tolist()) for j, i, *s in edge_set(edge_index, edge_shift)}
    assert mapped == reference


def test_reduction_ops_are_unimodular_and_undo_a_shear():
    """``op @ cell`` is a basis of the same lattice (|det op| = 1) as short as the cell it was
    sheared from; non-periodic rows stay as they are."""
    from geognn.graph.radius import reduction_ops

    base = np.diag([3.0, 4.0, 5.0])
    M = np.array([[1, 0, 0], [6, 1, 0], [-5, 4, 1]])
    cells = torch.tensor(np.stack([M @ base, M @ base, base]), dtype=DTYPE)
    pbc = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])
    ops = reduction_ops(cells, pbc)
    assert ops.dtype == torch.long and torch.linalg.det(ops.double()).abs().tolist() == [1.0, 1.0, 1.0]
    reduced = ops.double() @ cells
    assert sorted(reduced[0].norm(dim=-1).tolist()) == pytest.approx([3.0, 4.0, 5.0])
    torch.testing.assert_close(reduced[1][2], cells[1][2])  # the non-periodic row is kept
    assert torch.equal(ops[2], torch.eye(3, dtype=torch.long))


def test_all_false_pbc_equals_molecule_graph():
    rng = np.random.default_rng(11)
    pos = torch.tensor(rng.uniform(0, 4, size=(25, 3)), dtype=DTYPE)
    for cell in (torch.zeros(3, 3, dtype=DTYPE), torch.tensor(random_cell(rng), dtype=DTYPE)):
        edge_index, edge_shift = periodic_radius_graph(pos, 1.6, cell, torch.tensor([False, False, False]))
        assert torch.equal(edge_index, radius_graph(pos, 1.6))
        assert not bool(edge_shift.any())


def test_float32_positions():
    rng = np.random.default_rng(12)
    pos, cell, r = random_periodic_structure(rng, (True, True, False), True, True)
    pos32, cell32 = torch.tensor(pos, dtype=torch.float32), torch.tensor(cell, dtype=torch.float32)
    edge_index, edge_shift = periodic_radius_graph(pos32, r, cell32, torch.tensor([True, True, False]))
    assert edge_shift.dtype == torch.float32
    expected = brute_periodic(pos32.double().numpy(), r, cell32.double().numpy(), [True, True, False])
    assert set(edge_set(edge_index, edge_shift)) == expected
    ei = radius_graph(pos32, 2.0)
    assert set(edge_set(ei)) == brute_molecule(pos32.double().numpy(), 2.0)


def test_positions_requiring_grad_are_accepted():
    rng = np.random.default_rng(13)
    pos = torch.tensor(rng.normal(size=(8, 3)), dtype=DTYPE, requires_grad=True)
    edge_index = radius_graph(pos, 1.5)
    assert set(edge_set(edge_index)) == brute_molecule(pos.detach().numpy(), 1.5)
    cell = torch.eye(3, dtype=DTYPE).mul(3.0).requires_grad_()
    edge_index, edge_shift = periodic_radius_graph(pos, 2.0, cell, torch.tensor([True, True, True]))
    assert not edge_shift.requires_grad
    vec, length = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
    length.sum().backward()
    assert pos.grad is not None and cell.grad is not None


# --------------------------------------------------------------------------- against ASE


def _ase_structures():
    from ase.build import bulk, fcc111

    si = bulk("Si", "diamond", a=5.43)  # primitive fcc cell: triclinic
    cu = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    rattled = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 1, 1))
    rattled.rattle(stdev=0.15, seed=3)
    rattled.positions[0] += rattled.cell[1] * 1.7  # an atom outside the cell
    sheared = bulk("Cu", "fcc", a=3.6, orthorhombic=True)
    sheared.set_cell(sheared.cell[:] + np.array([[0, 0, 0], [0.8, 0, 0], [0.3, -0.5, 0]]), scale_atoms=True)
    sheared.rattle(stdev=0.05, seed=5)
    slab = fcc111("Al", size=(2, 2, 3), vacuum=4.0)  # pbc [T, T, F]
    slab.rattle(stdev=0.05, seed=4)
    return [
        ("Si", si, [2.0, 4.0, 6.0, 11.0]),  # 11 Å: several times the primitive cell
        ("Cu2", cu, [3.0, 5.3]),
        ("Al-rattled", rattled, [3.1, 6.0]),
        ("Cu-sheared", sheared, [4.7]),
        ("Al-slab", slab, [3.2, 7.5]),
    ]


@pytest.mark.parametrize("name,atoms,cutoffs", [pytest.param(*case, id=case[0]) for case in _ase_structures()])
def test_matches_ase_neighbor_list(name, atoms, cutoffs):
    from ase.neighborlist import neighbor_list

    pos = torch.tensor(atoms.positions, dtype=DTYPE)
    cell = torch.tensor(atoms.cell[:], dtype=DTYPE)
    pbc = torch.tensor(atoms.pbc)
    for r in cutoffs:
        i, j, S = neighbor_list("ijS", atoms, r)  # ASE's i is the centre (our receiver)
        expected = {(int(a), int(b), *map(int, s)) for a, b, s in zip(j, i, S)}
        edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc)
        assert set(edge_set(edge_index, edge_shift)) == expected, (name, r)
        assert edge_index.shape[1] == len(i)


# --------------------------------------------------------------------------- max_num_neighbors


def test_none_keeps_more_than_100_neighbours():
    rng = np.random.default_rng(21)
    n = 150
    pos = torch.tensor(rng.uniform(0, 1.5, size=(n, 3)), dtype=DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edge_index = radius_graph(pos, 5.0)
    assert edge_index.shape[1] == n * (n - 1)  # the complete graph
    assert torch.equal(torch.bincount(edge_index[1]), torch.full((n,), n - 1))

    cell = torch.eye(3, dtype=DTYPE) * 2.0
    two = torch.tensor([[0.1, 0.2, 0.3], [1.1, 0.9, 1.4]], dtype=DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edge_index, edge_shift = check_periodic_graph(two, 5.9, cell, torch.tensor([True] * 3))
    assert int(torch.bincount(edge_index[1]).min()) > 100


def test_max_num_neighbors_keeps_the_nearest():
    rng = np.random.default_rng(22)
    pos_np = rng.uniform(0, 6.0, size=(70, 3))
    pos = torch.tensor(pos_np, dtype=DTYPE)
    r, k = 2.2, 5
    full = brute_molecule(pos_np, r)
    degree = np.bincount([i for _, i in full], minlength=len(pos_np))
    assert degree.max() > k and ((degree > 0) & (degree < k)).any()  # both sides of the cap occur
    dropped = int(np.maximum(degree - k, 0).sum())
    over = int((degree > k).sum())

    with pytest.warns(UserWarning, match="max_num_neighbors") as record:
        edge_index = radius_graph(pos, r, max_num_neighbors=k)
    message = str(record[0].message)
    assert f"dropped {dropped} edges" in message
    assert message.startswith(f"{over} atoms")
    assert record[0].filename == __file__  # the warning points at the caller

    assert_sorted_by_receiver_then_sender(edge_index, len(pos_np))
    kept = edge_set(edge_index)
    assert set(kept) <= full
    for i in range(len(pos_np)):
        senders = [j for j, ii in kept if ii == i]
        assert len(senders) == min(degree[i], k)
        candidates = sorted((np.linalg.norm(pos_np[j] - pos_np[i]), j) for j, ii in full if ii == i)
        assert set(senders) == {j for _, j in candidates[:k]}


def test_max_num_neighbors_batched_molecules():
    rng = np.random.default_rng(23)
    sizes = [30, 4, 25]
    pos_np = np.concatenate([rng.uniform(0, 3.0, size=(n, 3)) for n in sizes])
    batch_np = np.repeat(np.arange(3), sizes)
    pos, batch = torch.tensor(pos_np, dtype=DTYPE), torch.tensor(batch_np)
    r, k = 1.8, 4
    full = brute_molecule(pos_np, r, batch_np)
    with pytest.warns(UserWarning, match="max_num_neighbors"):
        edge_index = radius_graph(pos, r, batch=batch, max_num_neighbors=k)
    kept = edge_set(edge_index)
    assert set(kept) <= full
    for i in range(len(pos_np)):
        candidates = sorted((np.linalg.norm(pos_np[j] - pos_np[i]), j) for j, ii in full if ii == i)
        assert {j for j, ii in kept if ii == i} == {j for _, j in candidates[:k]}


def test_max_num_neighbors_periodic_keeps_the_nearest_images():
    rng = np.random.default_rng(24)
    pos_np, cell_np, _ = random_periodic_structure(rng, (True, True, True), False, True, max_atoms=6)
    r, k = 5.0, 9
    pos, cell, pbc = torch.tensor(pos_np, dtype=DTYPE), torch.tensor(cell_np, dtype=DTYPE), torch.tensor([True] * 3)
    full = brute_periodic(pos_np, r, cell_np, [True] * 3)
    with pytest.warns(UserWarning, match="max_num_neighbors"):
        edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, max_num_neighbors=k)
    kept = edge_set(edge_index, edge_shift)
    assert set(kept) <= full and len(kept) == len(set(kept))
    assert_sorted_by_receiver_then_sender(edge_index, len(pos_np))

    def dist(e):
        j, i, *s = e
        return np.linalg.norm(pos_np[j] + np.array(s) @ cell_np - pos_np[i])

    for i in range(len(pos_np)):
        all_d = sorted(dist(e) for e in full if e[1] == i)
        kept_d = sorted(dist(e) for e in kept if e[1] == i)
        assert len(all_d) > k
        # ties (an atom's images s and -s) make the choice ambiguous, not the distances
        np.testing.assert_allclose(kept_d, all_d[:k], rtol=0, atol=1e-12)


def test_max_num_neighbors_at_least_max_degree_does_not_warn():
    rng = np.random.default_rng(25)
    pos = torch.tensor(rng.uniform(0, 4.0, size=(40, 3)), dtype=DTYPE)
    r = 1.9
    reference = radius_graph(pos, r)
    max_degree = int(torch.bincount(reference[1]).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in (max_degree, max_degree + 1, 10_000):
            assert torch.equal(radius_graph(pos, r, max_num_neighbors=k), reference)
    with pytest.warns(UserWarning, match="max_num_neighbors"):
        limited = radius_graph(pos, r, max_num_neighbors=max_degree - 1)
    assert limited.shape[1] < reference.shape[1]

    cell = torch.eye(3, dtype=DTYPE) * 3.0
    ref_ei, ref_es = periodic_radius_graph(pos[:5], 3.5, cell, torch.tensor([True] * 3))
    max_degree = int(torch.bincount(ref_ei[1]).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ei, es = periodic_radius_graph(pos[:5], 3.5, cell, torch.tensor([True] * 3), max_num_neighbors=max_degree)
    assert torch.equal(ei, ref_ei) and torch.equal(es, ref_es)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "4"])
def test_max_num_neighbors_must_be_positive(k):
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(pos, 1.5, max_num_neighbors=k)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        periodic_radius_graph(pos, 1.5, torch.eye(3, dtype=DTYPE) * 3, torch.tensor([True] * 3), max_num_neighbors=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_beyond_initial_neighbour_cap():
    # > 64 neighbours per atom exercises the doubling of torch-cluster's per-receiver cap on CUDA
    rng = np.random.default_rng(26)
    pos = torch.tensor(rng.uniform(0, 2.0, size=(200, 3)), dtype=DTYPE)
    cpu = radius_graph(pos, 1.5)
    assert int(torch.bincount(cpu[1]).max()) > 128
    assert torch.equal(radius_graph(pos.cuda(), 1.5).cpu(), cpu)
    cell = torch.eye(3, dtype=DTYPE) * 2.0
    pbc = torch.tensor([True, True, False])
    ei, es = periodic_radius_graph(pos[:10], 6.0, cell, pbc)
    ei_cuda, es_cuda = periodic_radius_graph(pos[:10].cuda(), 6.0, cell.cuda(), pbc.cuda())
    assert set(edge_set(ei_cuda.cpu(), es_cuda.cpu())) == set(edge_set(ei, es))


# --------------------------------------------------------------------------- bad input

PBC3 = torch.tensor([True, True, True])
CELL = torch.eye(3, dtype=DTYPE) * 4.0


def _pos(n=4, seed=0):
    return torch.tensor(np.random.default_rng(seed).uniform(0, 3, size=(n, 3)), dtype=DTYPE)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_positions_raise(value):
    pos = _pos()
    pos[2, 1] = value
    with pytest.raises(ValueError, match=r"NaN or inf.*\[2\]"):
        radius_graph(pos, 2.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        periodic_radius_graph(pos, 2.0, CELL, PBC3)


def test_empty_positions_raise():
    pos = torch.zeros(0, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match="empty"):
        radius_graph(pos, 2.0)
    with pytest.raises(ValueError, match="empty"):
        periodic_radius_graph(pos, 2.0, CELL, PBC3)


def test_wrong_position_shape_raises():
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        radius_graph(torch.zeros(4, 2, dtype=DTYPE), 2.0)


def test_cutoff_accepts_numpy_and_torch_numbers():
    expected = radius_graph(_pos(), 2.0)
    for r in (np.float32(2.0), np.float64(2.0), torch.tensor(2.0), 2):
        assert torch.equal(radius_graph(_pos(), r), expected)
    assert torch.equal(radius_graph(_pos(), 2.0, max_num_neighbors=np.int64(50)), expected)


@pytest.mark.parametrize("r", [-1.0, 0.0, 0, float("nan"), float("inf"), True, "2.0", None])
def test_bad_cutoff_raises(r):
    with pytest.raises(ValueError, match="cutoff"):
        radius_graph(_pos(), r)
    with pytest.raises(ValueError, match="cutoff"):
        periodic_radius_graph(_pos(), r, CELL, PBC3)


@pytest.mark.parametrize(
    "cell,pbc",
    [
        ([[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]], [True, True, True]),  # two equal vectors
        ([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]], [True, True, True]),  # coplanar
        ([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 0]], [True, True, True]),  # zero vector along a periodic direction
        ([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]], [True, True, False]),  # zero vector along a periodic direction
        ([[3.0, 0, 0], [-6.0, 0, 0], [0, 0, 5.0]], [True, True, False]),  # parallel periodic vectors
        ([[0.0, 0, 0], [0, 0, 0], [0, 0, 0]], [True, False, False]),
    ],
)
def test_degenerate_periodic_cell_raises(cell, pbc):
    cell = torch.tensor(cell, dtype=DTYPE)
    with pytest.raises(ValueError, match="zero or linearly dependent"):
        periodic_radius_graph(_pos(), 2.0, cell, torch.tensor(pbc))


def test_nonperiodic_degenerate_vectors_are_fine():
    # the same zero / parallel vectors are allowed where the direction is not periodic
    cell = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0]], dtype=DTYPE)
    check_periodic_graph(_pos(6), 2.5, cell, torch.tensor([True, True, False]))
    cell = torch.tensor([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=DTYPE)
    check_periodic_graph(_pos(6), 2.5, cell, torch.tensor([True, False, False]))


def test_non_finite_periodic_cell_raises():
    cell = CELL.clone()
    cell[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        periodic_radius_graph(_pos(), 2.0, cell, PBC3)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_vector_along_nonperiodic_direction(value):
    # Non-periodic cell vectors are documented as ignored. A NaN/inf there must
    # either be ignored (same graph as with a zero row) or rejected with a
    # ValueError -- not silently give a wrong graph.
    pos = torch.tensor([[0.5, 0.0, 0.0], [9.5, 0.0, 0.0]], dtype=DTYPE)
    pbc = torch.tensor([True, True, False])
    cell = torch.eye(3, dtype=DTYPE) * 10.0
    expected = periodic_radius_graph(pos, 2.0, cell * torch.tensor([[1.0], [1.0], [0.0]], dtype=DTYPE), pbc)
    bad = cell.clone()
    bad[2, 2] = value
    try:
        got = periodic_radius_graph(pos, 2.0, bad, pbc)
    except ValueError:
        return
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_unsorted_batch_raises():
    batch = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="sorted"):
        radius_graph(_pos(), 2.0, batch=batch)
    with pytest.raises(ValueError, match="sorted"):
        periodic_radius_graph(_pos(), 2.0, torch.stack([CELL, CELL]), PBC3, batch=batch)


def test_wrong_batch_shape_raises():
    with pytest.raises(ValueError, match=r"batch must have shape \[4\]"):
        radius_graph(_pos(), 2.0, batch=torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("num_cells,batch", [(1, [0, 0, 1, 1]), (3, [0, 0, 1, 1]), (2, [0, 0, 0, 0])])
def test_wrong_number_of_cells_raises(num_cells, batch):
    cell = CELL.expand(num_cells, 3, 3)
    with pytest.raises(ValueError, match=rf"cell has {num_cells} structures but batch numbers"):
        periodic_radius_graph(_pos(), 2.0, cell, PBC3, batch=torch.tensor(batch))


def test_wrong_cell_or_pbc_shape_raises():
    with pytest.raises(ValueError, match="cell must have shape"):
        periodic_radius_graph(_pos(), 2.0, torch.eye(4, dtype=DTYPE), PBC3)
    with pytest.raises(ValueError, match="pbc must have shape"):
        periodic_radius_graph(_pos(), 2.0, CELL[None], torch.tensor([[True] * 3] * 2))
