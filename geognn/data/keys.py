"""Every tensor name geognn uses, with its shape, dtype and units.

This file is the single place where the conventions are written down. Other
modules import the names from here instead of spelling string literals.

Units
-----
energy eV, length Å, forces eV/Å, stress eV/Å³ (ASE's sign convention:
``stress = (1/V) dE/dstrain``, positive under tension; pressure is minus the
trace over 3). Stress errors (training's lines, ``geognn evaluate``,
``geognn compare``) are over all 9 components of each structure's 3 × 3
stress, so the off-diagonal pairs count twice, as in the loss. Dataset loaders convert from their source
units (QM9 ships Hartree, Bohr, Debye) and say so in their docstrings.

Edge direction
--------------
``edge_index`` follows PyG's ``source_to_target`` flow::

    j = edge_index[0]   # sender (source)
    i = edge_index[1]   # receiver (target): messages are aggregated here

    edge_vec = pos[j] - pos[i] + edge_shift @ cell[batch[j]]

so ``edge_vec`` points from the receiver to the sender, and for periodic
systems ``edge_shift`` holds the integer lattice translation applied to the
sender's image. Every edge appears in both directions. ``tests/graph`` checks
this direction once; nothing else re-derives it.

Feature channels
----------------
Scalar channels ``h`` [N, F]; Cartesian vector channels ``v`` [N, F_v, 3];
irreps channels one e3nn tensor [N, irreps.dim] with irreps given as strings
(``"64x0e + 32x1o"``). With e3nn >= 0.5 the l = 1 components are ordered
(x, y, z) (``Irreps("1o").D_from_matrix(R)`` is R) and an irreps tensor is
multiplicity-major, so ``cat([h, v.reshape(N, -1)])`` is exactly the
``"Fx0e + F_vx1o"`` tensor (e3nn releases before 0.5 ordered l = 1 as y, z, x).
`geognn.nn.join_scalars_vectors` / `split_scalars_vectors` convert, and
``tests/nn/test_irreps.py`` checks the convention against e3nn.

Shapes below use N atoms, E edges and B structures in a batch.
"""

# ---- per-structure inputs (what `geognn.data.atoms_to_data` produces) ----
ATOMIC_NUMBERS = "z"  # [N] long, 1 <= z <= 118
POSITIONS = "pos"  # [N, 3] float, Å
CELL = "cell"  # [B, 3, 3] float, Å, lattice vectors as rows; periodic systems only
PBC = "pbc"  # [B, 3] bool; periodic systems only
BATCH = "batch"  # [N] long, structure index of each atom (added by PyG's Batch)
PTR = "ptr"  # [B + 1] long, offsets of each structure's atoms (added by PyG's Batch)

# ---- dataset extras (what `geognn.data` loaders attach besides the labels below) ----
QM9_TARGETS = "y"  # [B, 16] float64, QM9's targets in geognn.data.qm9.ALL_TARGETS order and UNITS
DATASET_INDEX = "idx"  # [B] long, the structure's index in its source (QM9: 1-based molecule number)
GROUP = "group"  # [B] long, which molecule (or file, or info value) a structure belongs to; data.split_by keeps groups whole

# ---- graph (what `geognn.graph` produces) ----
EDGE_INDEX = "edge_index"  # [2, E] long, (sender j, receiver i)
EDGE_SHIFT = "edge_shift"  # [E, 3] float holding integers, lattice image of the sender
EDGE_VECTORS = "edge_vec"  # [E, 3] float, pos[j] - pos[i] + edge_shift @ cell, Å
EDGE_LENGTHS = "edge_len"  # [E] float, |edge_vec|, Å
EDGE_ATTR = "edge_attr"  # [E, ...] what a graph builder attaches to each edge (the bond graph: BOND_ORDER values)

# ---- bond graphs (what `geognn.graph.bonds` perceives from geometry; edges in the convention above) ----
BOND_INDEX = "bond_index"  # [2, E] long, both directions of every bond (covalent radii x BOND_SCALE)
BOND_ORDER = "bond_order"  # [E] long, 1 single, 2 double, 3 triple, from the bond length

# ---- model outputs, and the labels datasets carry under the same names ----
ENERGY = "energy"  # [B] eV
NODE_ENERGY = "node_energy"  # [N] eV, per-atom energies; ENERGY is their sum (their mean for a "mean" readout)
FORCES = "forces"  # [N, 3] eV/Å, -dE/dpos
STRESS = "stress"  # [B, 3, 3] eV/Å³, (1/V) dE/dstrain; periodic systems only
LABELS = (ENERGY, FORCES, STRESS)  # the labels a dataset may carry, in LABEL_MASK's column order
# [B, 3] bool, whether the structure carries each of LABELS; present only in datasets whose
# structures carry different labels (crystals with stress beside molecules without), where a
# missing label holds zeros and counts in no loss term or error (geognn.data.labels)
LABEL_MASK = "label_mask"
UPDATED_POSITIONS = "pos_updated"  # [N, 3] Å, coordinates after coordinate-updating layers (EGNN)

# How each model input and output transforms under rotations, reflections,
# translations and atom permutations; `geognn.testing.assert_equivariant`
# reads these. The form is "<indexing>:<type>": indexing "node" is permuted
# with the atoms, "graph" and "edge" are not; type "scalar" is invariant,
# "vector" rotates (x -> R x), "position" rotates and translates, "rank2"
# transforms as R X R^T.
TRANSFORMS = {
    ATOMIC_NUMBERS: "node:scalar",
    POSITIONS: "node:position",
    CELL: "graph:vector",
    PBC: "graph:scalar",
    BATCH: "node:scalar",
    QM9_TARGETS: "graph:scalar",
    DATASET_INDEX: "graph:scalar",
    GROUP: "graph:scalar",
    ENERGY: "graph:scalar",
    NODE_ENERGY: "node:scalar",
    FORCES: "node:vector",
    STRESS: "graph:rank2",
    LABEL_MASK: "graph:scalar",
    UPDATED_POSITIONS: "node:position",
    EDGE_INDEX: "edge:index",
    EDGE_VECTORS: "edge:vector",
    EDGE_LENGTHS: "edge:scalar",
    EDGE_ATTR: "edge:scalar",
    BOND_INDEX: "edge:index",
    BOND_ORDER: "edge:scalar",
}
