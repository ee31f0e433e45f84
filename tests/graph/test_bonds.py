"""Bond graphs from covalent radii, the graph-builder registry and random-walk encodings."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from geognn.graph import (
    BOND_SCALE,
    GRAPH_BUILDERS,
    bond_atom_features,
    bond_graph,
    bond_orders,
    bonds_with_lengths,
    build_edges,
    edge_vectors,
    random_walk_pe,
    register_graph_builder,
)
from geognn.testing import same_bond_graph, smiles_graph

SAMPLES = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "qm9_xyz"
SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def read_sample(path):
    """(z, pos, relaxed-geometry SMILES) of a QM9 .xyz file (coordinates may use Mathematica's *^)."""
    lines = path.read_text().splitlines()
    n = int(lines[0])
    atoms = [line.split() for line in lines[2 : 2 + n]]
    z = torch.tensor([SYMBOLS[a[0]] for a in atoms])
    pos = torch.tensor([[float(x.replace("*^", "e")) for x in a[1:4]] for a in atoms], dtype=torch.float64)
    return z, pos, lines[n + 3].split()[1]


SAMPLE_FILES = sorted(SAMPLES.glob("*.xyz"))


def test_samples_exist():
    assert len(SAMPLE_FILES) == 31


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_bonds_of_every_qm9_sample_match_its_smiles(path):
    """Same heavy-atom graph as the SMILES QM9 gives for the relaxed geometry, with the same number
    of hydrogens on each heavy atom, and every hydrogen on exactly one heavy atom."""
    z, pos, smiles = read_sample(path)
    edge_index, shift = bond_graph(z, pos)
    assert shift is None
    assert same_bond_graph(smiles, z, edge_index)


def test_bond_graph_fails_the_smiles_check_when_wrong():
    """The check above can fail: too tight a tolerance loses bonds, too loose a one adds them."""
    z, pos, smiles = read_sample(SAMPLE_FILES[-1])
    assert same_bond_graph(smiles, z, bond_graph(z, pos)[0])
    assert not same_bond_graph(smiles, z, bond_graph(z, pos, scale=0.9)[0])
    assert not same_bond_graph(smiles, z, bond_graph(z, pos, scale=1.6)[0])


def test_bond_orders_of_unconjugated_samples_match_the_smiles():
    """Triple, double and single bonds from lengths, on the samples whose multiple bonds are
    isolated (no neighbouring multiple bond, N or O), where a Kekulé SMILES fixes the orders;
    conjugated and amide bonds have lengths between two orders."""
    checked = 0
    for path in SAMPLE_FILES:
        z, pos, smiles = read_sample(path)
        elements, bonds, _ = smiles_graph(smiles)
        neighbours = {}
        for a, b, _ in bonds:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        in_multiple = {atom for a, b, k in bonds if k > 1 for atom in (a, b)}
        isolated = all(
            c not in in_multiple and elements[c] not in ("N", "O")
            for a, b, k in bonds if k > 1 for atom in (a, b) for c in neighbours[atom] if c not in (a, b)
        )
        if not isolated:
            continue
        edge_index, _ = bond_graph(z, pos)
        _, length = edge_vectors(pos, edge_index)
        assert same_bond_graph(smiles, z, edge_index, bond_orders(z, edge_index, length)), smiles
        checked += 1
    assert checked >= 20


def test_bond_orders_by_length():
    z = torch.tensor([6, 6, 6, 6, 6, 6, 1, 8])
    edge_index = torch.tensor([[0, 2, 4, 6, 0], [1, 3, 5, 0, 7]])
    length = torch.tensor([1.54, 1.34, 1.20, 1.09, 1.21], dtype=torch.float64)  # C-C, C=C, C#C, C-H, C=O
    assert bond_orders(z, edge_index, length).tolist() == [1, 2, 3, 1, 2]
    # Hydrogen and the halogens never take multiple bonds, however short.
    assert bond_orders(torch.tensor([9, 6]), torch.tensor([[0], [1]]), torch.tensor([1.0])).tolist() == [1]


def _edge_set(edge_index, shift=None):
    if shift is None:
        shift = torch.zeros(edge_index.shape[1], 3)
    return {(int(j), int(i), *map(int, s)) for j, i, s in zip(edge_index[0], edge_index[1], shift)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_periodic_bonds_equal_ase_neighbour_list(seed):
    """With per-atom cutoffs scale * r_cov, ASE's neighbour list is the same criterion."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", a=5.43) * (2, 1, 1) + Atoms()
    salt = bulk("NaCl", "rocksalt", a=5.64)
    atoms = [atoms, salt, bulk("Cu", "fcc", a=3.6, orthorhombic=True)][seed]
    atoms.rattle(0.1, seed=seed)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.05 * rng.standard_normal((3, 3))), scale_atoms=True)
    z = torch.tensor(atoms.numbers)
    pos = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell[:]).unsqueeze(0)
    pbc = torch.tensor(atoms.pbc).unsqueeze(0)
    edge_index, shift = bond_graph(z, pos, cell=cell, pbc=pbc)
    i, j, S, d = neighbor_list("ijSd", atoms, [BOND_SCALE * covalent_radii[n] for n in atoms.numbers])
    # ASE lists (centre i, neighbour j at j + S): our sender is j, receiver i.
    expected = {(int(b), int(a), *map(int, s)) for a, b, s in zip(i, j, S)}
    assert len(expected) > 0
    assert _edge_set(edge_index, shift) == expected
    # The lengths the search measured are the bonds' lengths.
    same_edges, same_shift, length = bonds_with_lengths(z, pos, cell=cell, pbc=pbc)
    assert torch.equal(same_edges, edge_index) and torch.equal(same_shift, shift)
    ase_length = {(int(b), int(a), *map(int, s)): float(x) for a, b, s, x in zip(i, j, S, d)}
    ours = {(int(a), int(b), *map(int, s)): float(x) for a, b, s, x in zip(edge_index[0], edge_index[1], shift, length)}
    assert ours == pytest.approx(ase_length, abs=1e-10)


def test_diamond_silicon_has_four_bonds_per_atom():
    atoms = bulk("Si", "diamond", a=5.43)
    edge_index, _ = bond_graph(torch.tensor(atoms.numbers), torch.tensor(atoms.positions),
                               cell=torch.tensor(atoms.cell[:]).unsqueeze(0), pbc=torch.tensor([[True] * 3]))
    assert torch.bincount(edge_index[1]).tolist() == [4, 4]


def test_bond_graph_is_permutation_equivariant_and_batched():
    a, b = molecule("CH3CH2OH"), molecule("CH3CONH2")
    z = torch.tensor(np.concatenate([a.numbers, b.numbers]))
    pos = torch.tensor(np.concatenate([a.positions, b.positions + 100.0]))
    batch = torch.tensor([0] * len(a) + [1] * len(b))
    edge_index, _ = bond_graph(z, pos, batch)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    permuted, _ = bond_graph(z[perm], pos[perm])  # 100 Å apart: one structure or two, the same bonds
    assert _edge_set(perm[permuted]) == _edge_set(edge_index)
    assert len(_edge_set(edge_index)) == 2 * (8 + 8)  # ethanol and acetamide: 8 bonds each


def test_bond_graph_rejects_bad_input():
    pos = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="scale"):
        bond_graph(torch.tensor([1, 1]), pos, scale=0.0)
    with pytest.raises(ValueError, match="atomic numbers"):
        bond_graph(torch.tensor([0, 1]), pos)
    with pytest.raises(ValueError, match="shape"):
        bond_graph(torch.tensor([1]), pos)
    with pytest.raises(ValueError, match="pbc"):
        bond_graph(torch.tensor([1, 1]), pos, cell=torch.eye(3).unsqueeze(0))


def test_atom_features_by_hand():
    """Acetaldehyde CH3-CHO: the methyl C has 4 bonds (3 H), the carbonyl C 3 bonds (1 H) and
    bond-order sum 4 (C=O counted twice), O one double bond, each H one bond."""
    atoms = molecule("CH3CHO")
    z, pos = torch.tensor(atoms.numbers), torch.tensor(atoms.positions)
    edge_index, _ = bond_graph(z, pos)
    _, length = edge_vectors(pos, edge_index)
    features = bond_atom_features(z, edge_index, bond_orders(z, edge_index, length))
    degree, hydrogens, valence = features[:, :6].argmax(1), features[:, 6:12].argmax(1), features[:, 12] * 4
    by_atom = {s: [] for s in "CHO"}
    for k, symbol in enumerate(atoms.get_chemical_symbols()):
        by_atom[symbol].append((int(degree[k]), int(hydrogens[k]), float(valence[k])))
    assert sorted(by_atom["C"]) == [(3, 1, 4.0), (4, 3, 4.0)]
    assert by_atom["O"] == [(1, 0, 2.0)]
    assert set(by_atom["H"]) == {(1, 0, 1.0)}


def test_smiles_reader():
    elements, bonds, hydrogens = smiles_graph("OC1C2CCC12O")
    assert elements == ["O", "C", "C", "C", "C", "C", "O"]
    assert sorted(bonds) == [(0, 1, 1), (1, 2, 1), (1, 5, 1), (2, 3, 1), (2, 5, 1), (3, 4, 1), (4, 5, 1), (5, 6, 1)]
    assert hydrogens == [1, 1, 1, 2, 2, 0, 1]
    assert smiles_graph("C#N")[1:] == ([(0, 1, 3)], [1, 0])
    assert smiles_graph("C[NH3+].[O-]")[2] == [3, 3, 0]
    with pytest.raises(ValueError, match="unsupported"):
        smiles_graph("c1ccccc1")


# ---------------------------------------------------------------------------- registry


def test_registry_builds_radius_and_bond_graphs():
    assert {"radius", "bonds"} <= set(GRAPH_BUILDERS)
    atoms = molecule("CH3CH2OH")
    z, pos = torch.tensor(atoms.numbers), torch.tensor(atoms.positions)
    batch = torch.zeros(len(atoms), dtype=torch.long)
    bonds = build_edges("bonds", z, pos, batch)
    assert bonds.edge_index.shape[1] == 16 and bonds.edge_attr.tolist() == [1] * 16
    radius = build_edges("radius", z, pos, batch, cutoff=10.0)
    assert radius.edge_index.shape[1] == len(z) * (len(z) - 1) and radius.edge_attr is None
    with pytest.raises(ValueError, match="unknown graph builder 'knn'"):
        build_edges("knn", z, pos, batch)
    with pytest.raises(ValueError, match="atomic numbers"):
        build_edges("bonds", None, pos, batch)


def test_registering_a_builder():
    @register_graph_builder("test-complete")
    def complete(z, pos, batch, cell=None, pbc=None):
        from geognn.graph import GraphEdges

        n = pos.shape[0]
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = i != j
        return GraphEdges(torch.stack([j[keep], i[keep]]))

    try:
        edges = build_edges("test-complete", None, torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
        assert edges.edge_index.shape == (2, 6)
        with pytest.raises(ValueError, match="registered already"):
            register_graph_builder("test-complete")(complete)
    finally:
        GRAPH_BUILDERS.pop("test-complete")


# ---------------------------------------------------------------------------- encodings


def test_random_walk_pe_equals_pyg_transform():
    """Against PyG's AddRandomWalkPE on each graph alone, for a batch of a ring, a chain and a lone atom."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE

    ring = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    ring = torch.cat([ring, ring.flip(0)], dim=1)
    chain = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    graphs = [(ring, 6), (chain, 4), (torch.zeros(2, 0, dtype=torch.long), 1)]
    edge_index, batch, offset = [], [], 0
    expected = []
    for k, (edges, n) in enumerate(graphs):
        edge_index.append(edges + offset)
        batch += [k] * n
        offset += n
        data = AddRandomWalkPE(walk_length=7, attr_name="pe")(Data(edge_index=edges, num_nodes=n))
        expected.append(data.pe)
    ours = random_walk_pe(torch.cat(edge_index, 1), torch.tensor(batch), len(graphs), 7)
    torch.testing.assert_close(ours, torch.cat(expected), atol=1e-6, rtol=0)
    # By hand: on a 6-ring a walk returns after 2 steps with probability 1/2, never after odd steps.
    assert torch.allclose(ours[0, :3], torch.tensor([0.0, 0.5, 0.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bonds_equal_cpu():
    for atoms in (molecule("CH3CONH2"), bulk("NaCl", "rocksalt", a=5.64) * (2, 2, 2)):
        z, pos = torch.tensor(atoms.numbers), torch.tensor(atoms.positions)
        cell = torch.tensor(atoms.cell[:]).unsqueeze(0) if atoms.pbc.any() else None
        pbc = torch.tensor(atoms.pbc).unsqueeze(0) if atoms.pbc.any() else None
        expected = _edge_set(*bond_graph(z, pos, cell=cell, pbc=pbc))
        on_gpu = bond_graph(z.cuda(), pos.cuda(), cell=None if cell is None else cell.cuda(),
                            pbc=None if pbc is None else pbc.cuda())
        assert _edge_set(*(t.cpu() if t is not None else None for t in on_gpu)) == expected
