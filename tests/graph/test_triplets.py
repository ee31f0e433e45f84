"""Triplets k→j→i checked against a plain double loop over edges.

Convention (see `geognn.data.keys`): ``edge_index[0]`` is the sender, so a
triplet pairs edge kj = (k → j) with edge ji = (j → i). The back-tracking pair
is dropped only when k is i itself: the same atom *and*, in periodic cells,
the same image (``edge_shift[kj] + edge_shift[ji] == 0``).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from geognn.graph import edge_vectors, lattice_offsets, periodic_radius_graph, radius_graph, triplets

DTYPE = torch.float64
PBC_PATTERNS = [tuple(p) for p in itertools.product([True, False], repeat=3)]  # all 8, incl. FFF


# --------------------------------------------------------------------------- reference


def brute_triplets(edge_index, edge_shift=None) -> set[tuple[int, int]]:
    """All (kj, ji) with receiver[kj] == sender[ji], minus the pairs that return to i's own image."""
    sender, receiver = edge_index.tolist()
    shift = None if edge_shift is None else torch.round(edge_shift).long().tolist()
    pairs = set()
    for ji in range(len(sender)):
        j, i = sender[ji], receiver[ji]
        for kj in range(len(sender)):
            if receiver[kj] != j:
                continue
            k = sender[kj]
            back_to_i = k == i and (shift is None or all(a + b == 0 for a, b in zip(shift[kj], shift[ji])))
            if not back_to_i:
                pairs.add((kj, ji))
    return pairs


def check_triplets(edge_index, num_nodes, edge_shift=None, symmetric=True):
    """Run `triplets`, compare with the reference, check order and counts; return the pairs."""
    idx_kj, idx_ji = triplets(edge_index, num_nodes, edge_shift)
    assert idx_kj.dtype == idx_ji.dtype == torch.long
    assert idx_kj.shape == idx_ji.shape and idx_kj.dim() == 1
    got = list(zip(idx_kj.tolist(), idx_ji.tolist()))
    assert len(got) == len(set(got)), "duplicate triplets"
    assert set(got) == brute_triplets(edge_index, edge_shift)
    assert got == sorted(got, key=lambda p: (p[1], p[0])), "not sorted by idx_ji, then idx_kj"
    if symmetric:
        # every edge j→i (image s) has exactly one reverse i→j (image -s): one back-track per ji
        in_degree = torch.bincount(edge_index[1], minlength=num_nodes)
        assert len(got) == int((in_degree[edge_index[0]] - 1).sum())
    return got


# --------------------------------------------------------------------------- random graphs


def random_molecules(seed):
    """A batch of 1-4 random structures of 2-8 atoms sharing one region of space."""
    gen = torch.Generator().manual_seed(100 + seed)
    sizes = torch.randint(2, 9, (int(torch.randint(1, 5, (1,), generator=gen)),), generator=gen)
    box = 1.5 + 2.5 * float(torch.rand(1, generator=gen))
    pos = box * torch.rand(int(sizes.sum()), 3, generator=gen, dtype=DTYPE)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    r = 0.8 + 2.0 * float(torch.rand(1, generator=gen))
    return pos, batch, r


def random_cell(gen):
    """Randomly oriented triclinic cell, sides 2-4 Å, not too flat."""
    while True:
        lengths = 2.0 + 2.0 * torch.rand(3, generator=gen, dtype=DTYPE)
        dirs = torch.randn(3, 3, generator=gen, dtype=DTYPE)
        cell = dirs / dirs.norm(dim=1, keepdim=True) * lengths[:, None]
        if abs(float(torch.linalg.det(cell))) / float(lengths.prod()) > 0.4:
            return cell


def random_periodic(seed):
    """(pos, cell [B, 3, 3], pbc [B, 3], batch, r): 1-2 cells of 2-8 atoms, every pbc pattern.

    Half of the seeds take a cutoff beyond the shortest cell vector, so atoms
    neighbour their own images and the same pair appears through several
    images; the other half a cutoff of 0.6-1 times the longest one.
    """
    gen = torch.Generator().manual_seed(200 + seed)
    pbc = PBC_PATTERNS[seed % 8]
    num_structures = 1 + seed % 3 // 2
    cells = torch.stack([random_cell(gen) for _ in range(num_structures)])
    lengths = cells.norm(dim=-1)
    beyond_cell = seed // 8 % 2 == 0
    u = float(torch.rand(1, generator=gen))
    r = float(lengths.min()) * (1.1 + 0.5 * u) if beyond_cell else float(lengths.max()) * (0.6 + 0.4 * u)
    sizes = torch.randint(2, 6 if beyond_cell else 9, (num_structures,), generator=gen)  # E stays <= ~400
    batch = torch.repeat_interleave(torch.arange(num_structures), sizes)
    frac = torch.rand(len(batch), 3, generator=gen, dtype=DTYPE) * 1.4 - 0.2  # some atoms outside the cell
    pos = torch.einsum("nk,nki->ni", frac, cells[batch])
    return pos, cells, torch.tensor([pbc] * num_structures), batch, r


@pytest.mark.parametrize("seed", range(50))
def test_molecules_match_brute_force(seed):
    pos, batch, r = random_molecules(seed)
    edge_index = radius_graph(pos, r, batch=batch)
    check_triplets(edge_index, pos.shape[0])


@pytest.mark.parametrize("seed", range(64))
def test_periodic_cells_match_brute_force(seed):
    pos, cell, pbc, batch, r = random_periodic(seed)
    edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, batch=batch)
    assert edge_index.shape[1] <= 500  # keeps the O(E^2) reference fast
    check_triplets(edge_index, pos.shape[0], edge_shift)


def test_random_periodic_cases_reach_the_image_cases():
    # the cases above must actually contain what PyG's ``idx_i != idx_k`` gets wrong
    self_image_edges = repeated_pairs = kept_same_atom = 0
    for seed in range(64):
        pos, cell, pbc, batch, r = random_periodic(seed)
        edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, batch=batch)
        sender, receiver = edge_index
        self_image_edges += int((sender == receiver).sum())
        pairs = sender * pos.shape[0] + receiver
        repeated_pairs += pairs.numel() - pairs.unique().numel()
        idx_kj, idx_ji = triplets(edge_index, pos.shape[0], edge_shift)
        same_atom = sender[idx_kj] == receiver[idx_ji]
        # through two different atoms j, not only along one self-image edge
        kept_same_atom += int((same_atom & (sender[idx_ji] != receiver[idx_ji])).sum())
    assert self_image_edges > 100 and repeated_pairs > 100 and kept_same_atom > 100


@pytest.mark.parametrize("seed", range(12))
def test_arbitrary_edge_lists_match_brute_force(seed):
    # not a radius graph: directed, unsorted, with self-loops, repeated edges and isolated nodes
    gen = torch.Generator().manual_seed(300 + seed)
    num_nodes, num_edges = 10, int(torch.randint(1, 60, (1,), generator=gen))
    edge_index = torch.randint(0, num_nodes - 2, (2, num_edges), generator=gen)
    edge_shift = torch.randint(-1, 2, (num_edges, 3), generator=gen)  # long shifts are accepted too
    check_triplets(edge_index, num_nodes, edge_shift, symmetric=False)
    check_triplets(edge_index, num_nodes, None, symmetric=False)


# --------------------------------------------------------------------------- by hand


def test_single_atom_in_small_cell_keeps_its_own_images():
    # One atom in a cubic cell of side 2 Å, cutoff 2.5 Å: its neighbours are its
    # 6 face images (s = ±e_x, ±e_y, ±e_z at 2 Å; the next, at 2√2 Å, are out).
    # Every edge is 0 -> 0, so PyG's rule (drop k == i) keeps nothing. Correctly,
    # each edge ji (image s) pairs with the 6 edges into j minus the one with
    # image -s that returns to i itself: 6 * 5 = 30 triplets.
    pos = torch.zeros(1, 3, dtype=DTYPE)
    cell = torch.eye(3, dtype=DTYPE) * 2.0
    edge_index, edge_shift = periodic_radius_graph(pos, 2.5, cell, torch.tensor([True, True, True]))
    assert edge_index.shape[1] == 6
    got = check_triplets(edge_index, 1, edge_shift)
    assert len(got) == 30
    shift = edge_shift.long().tolist()
    for ji in range(6):
        partners = {tuple(shift[kj]) for kj, j in got if j == ji}
        assert partners == {tuple(s) for s in shift} - {tuple(-x for x in shift[ji])}
    # without shifts (the molecular rule) every pair has k == i and is dropped
    idx_kj, _ = triplets(edge_index, 1)
    assert idx_kj.numel() == 0


def test_angle_between_kj_and_ji_is_the_angle_at_j():
    # k = atom 0, j = atom 1, i = atom 2 with ∠kji = 135°, ∠jik = atan(1/2) ≈ 26.57°,
    # ∠ikj ≈ 18.43°. No angle is 90°: at 90° a sign error in either edge vector
    # (180° - θ) would go unnoticed.
    pos = torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)
    angle_at = {1: 135.0, 2: math.degrees(math.atan(0.5)), 0: 45.0 - math.degrees(math.atan(0.5))}
    edge_index = radius_graph(pos, 3.0)  # all 6 directed edges
    idx_kj, idx_ji = triplets(edge_index, 3)
    assert idx_kj.numel() == 6  # 3 atoms, every order (k, j, i) of them once
    edge_vec, _ = edge_vectors(pos, edge_index)
    a, b = edge_vec[idx_kj], -edge_vec[idx_ji]  # x_k - x_j and x_i - x_j
    angle = torch.rad2deg(torch.arccos((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))))
    sender, receiver = edge_index
    assert torch.equal(receiver[idx_kj], sender[idx_ji])  # both edges meet at j
    middle = sender[idx_ji].tolist()
    torch.testing.assert_close(angle, torch.tensor([angle_at[j] for j in middle], dtype=DTYPE))
    k, j, i = sender[idx_kj].tolist(), middle, receiver[idx_ji].tolist()
    assert float(angle[list(zip(k, j, i)).index((0, 1, 2))]) == pytest.approx(135.0)


def test_periodic_angles_use_the_right_images():
    # k and i the same atom in different images: the angle must follow the images
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DTYPE)
    cell = torch.eye(3, dtype=DTYPE) * 2.0
    pbc = torch.tensor([True, False, False])
    edge_index, edge_shift = periodic_radius_graph(pos, 1.5, cell, pbc)  # a chain ...0-1-0-1...
    idx_kj, idx_ji = triplets(edge_index, 2, edge_shift)
    assert idx_kj.numel() == 4  # each atom: left neighbour -> it -> right neighbour and back
    vec, _ = edge_vectors(pos, edge_index, lattice_offsets(edge_index, edge_shift, cell))
    cos = (vec[idx_kj] * -vec[idx_ji]).sum(-1) / (vec[idx_kj].norm(dim=-1) * vec[idx_ji].norm(dim=-1))
    torch.testing.assert_close(cos, torch.full((4,), -1.0, dtype=DTYPE))  # straight chain: 180°


# --------------------------------------------------------------------------- order, edge cases


@pytest.mark.parametrize("periodic", [False, True])
def test_unsorted_edges_give_the_same_pairs(periodic):
    if periodic:
        pos, cell, pbc, batch, r = random_periodic(0)
        edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, batch=batch)
    else:
        pos, batch, r = random_molecules(9)
        edge_index, edge_shift = radius_graph(pos, r, batch=batch), None
    sorted_pairs = set(check_triplets(edge_index, pos.shape[0], edge_shift))
    assert len(sorted_pairs) > 20
    perm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(5))
    shuffled_shift = None if edge_shift is None else edge_shift[perm]
    shuffled = check_triplets(edge_index[:, perm], pos.shape[0], shuffled_shift)  # also checks the order
    assert {(int(perm[kj]), int(perm[ji])) for kj, ji in shuffled} == sorted_pairs


def test_empty_graph_and_isolated_nodes():
    for num_nodes in (0, 4):
        for shift in (None, torch.zeros(0, 3)):
            idx_kj, idx_ji = triplets(torch.zeros(2, 0, dtype=torch.long), num_nodes, shift)
            assert idx_kj.shape == idx_ji.shape == (0,)
            assert idx_kj.dtype == idx_ji.dtype == torch.long
    # nodes 0, 2 and 5 have no edges; node 5 is past the last index used
    edge_index = torch.tensor([[1, 3, 3, 4], [3, 1, 4, 3]])
    got = check_triplets(edge_index, 6)
    assert set(got) == {(0, 2), (3, 1)}  # 1 -> 3 -> 4 and 4 -> 3 -> 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pos, cell, pbc, batch, r = random_periodic(0)
    edge_index, edge_shift = periodic_radius_graph(pos, r, cell, pbc, batch=batch)
    perm = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(6))
    for ei, es in ((edge_index, edge_shift), (edge_index[:, perm], edge_shift[perm])):
        cpu = triplets(ei, pos.shape[0], es)
        cuda = triplets(ei.cuda(), pos.shape[0], es.cuda())
        assert cuda[0].is_cuda and torch.equal(cuda[0].cpu(), cpu[0]) and torch.equal(cuda[1].cpu(), cpu[1])


# --------------------------------------------------------------------------- bad input

EDGES = torch.tensor([[0, 1], [1, 0]])


@pytest.mark.parametrize(
    "edge_index,num_nodes,edge_shift,match",
    [
        (torch.tensor([0, 1]), 2, None, r"edge_index must be a \[2, E\]"),
        (torch.zeros(3, 2, dtype=torch.long), 2, None, r"edge_index must be a \[2, E\]"),
        (EDGES.numpy(), 2, None, r"edge_index must be a \[2, E\]"),
        (EDGES.int(), 2, None, "torch.long"),
        (EDGES.float(), 2, None, "torch.long"),
        (EDGES, 1, None, r"num_nodes=1"),
        (-EDGES, 2, None, r"\[-1, 0\]"),
        (EDGES, -1, None, "num_nodes must be a non-negative int"),
        (EDGES, 2.0, None, "num_nodes must be a non-negative int"),
        (EDGES, True, None, "num_nodes must be a non-negative int"),
        (EDGES, 2, torch.zeros(2, 2), r"edge_shift must have shape \[E, 3\] = \[2, 3\]"),
        (EDGES, 2, torch.zeros(3, 3), r"edge_shift must have shape \[E, 3\] = \[2, 3\]"),
        (EDGES, 2, torch.zeros(6), r"edge_shift must have shape"),
        (EDGES, 2, torch.zeros(2, 3, dtype=torch.bool), "integer lattice shifts"),
        (EDGES, 2, torch.zeros(2, 3, device="meta"), "one device"),
    ],
)
def test_bad_input_raises(edge_index, num_nodes, edge_shift, match):
    with pytest.raises(ValueError, match=match):
        triplets(edge_index, num_nodes, edge_shift)
