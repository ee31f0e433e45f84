"""Reference bond graphs from SMILES, for checking perceived bonds (`geognn.graph.bonds`).

A small SMILES reader for the organic subset QM9 uses (no stereo, no charges beyond
bracket atoms' hydrogens), and a comparison of a perceived bond graph with the one a
SMILES string describes, up to atom order. Re-exported by `geognn.testing`.
"""

from __future__ import annotations

_ORGANIC_VALENCES = {"B": (3,), "C": (4,), "N": (3, 5), "O": (2,), "P": (3, 5), "S": (2, 4, 6),
                     "F": (1,), "Cl": (1,), "Br": (1,), "I": (1,)}
_SMILES_BONDS = {"-": 1, "=": 2, "#": 3}


def smiles_graph(smiles: str) -> tuple[list[str], list[tuple[int, int, int]], list[int]]:
    """Read a Kekulé SMILES into ``(elements, bonds (i, j, order), hydrogens per atom)``.

    A small reader for checking perceived bond graphs against a dataset's SMILES (QM9 writes
    Kekulé SMILES): the organic subset with implicit hydrogens, bracket atoms with explicit
    hydrogen counts and charges, branches, ring closures (digits and %nn) and the bond symbols
    ``- = #``. Aromatic lower-case atoms, stereo marks and isotopes are refused by name.
    """
    elements: list[str] = []
    explicit_h: list[int | None] = []
    bonds: list[tuple[int, int, int]] = []
    stack: list[int] = []
    rings: dict[int, tuple[int, int | None]] = {}
    previous, order, i = None, None, 0

    def add_atom(symbol: str, hydrogens: int | None) -> None:
        nonlocal previous, order
        elements.append(symbol)
        explicit_h.append(hydrogens)
        if previous is not None:
            bonds.append((previous, len(elements) - 1, order or 1))
        previous, order = len(elements) - 1, None

    while i < len(smiles):
        c = smiles[i]
        if c == "[":
            end = smiles.index("]", i)
            body = smiles[i + 1 : end]
            symbol = body[:2] if body[:2] in _ORGANIC_VALENCES or body[:2] in ("Si", "Se") else body[:1]
            if not symbol.isalpha() or not symbol[0].isupper():
                raise ValueError(f"unsupported bracket atom [{body}] in {smiles!r}")
            rest = body[len(symbol) :]
            hydrogens = 0
            if rest.startswith("H"):
                digits = "".join(ch for ch in rest[1:3] if ch.isdigit())
                hydrogens = int(digits) if digits else 1
            add_atom(symbol, hydrogens)
            i = end + 1
        elif smiles[i : i + 2] in ("Cl", "Br"):
            add_atom(smiles[i : i + 2], None)
            i += 2
        elif c in _ORGANIC_VALENCES:
            add_atom(c, None)
            i += 1
        elif c in _SMILES_BONDS:
            order = _SMILES_BONDS[c]
            i += 1
        elif c.isdigit() or c == "%":
            label = int(smiles[i + 1 : i + 3]) if c == "%" else int(c)
            i += 3 if c == "%" else 1
            if label in rings:
                atom, ring_order = rings.pop(label)
                bonds.append((atom, previous, order or ring_order or 1))
                order = None
            else:
                rings[label] = (previous, order)
                order = None
        elif c == "(":
            stack.append(previous)
            i += 1
        elif c == ")":
            previous = stack.pop()
            i += 1
        elif c == ".":
            previous = None
            i += 1
        else:
            raise ValueError(f"unsupported SMILES character {c!r} in {smiles!r}")
    if rings or stack:
        raise ValueError(f"unclosed ring or branch in {smiles!r}")
    used = [0] * len(elements)
    for a, b, k in bonds:
        used[a] += k
        used[b] += k
    hydrogens = []
    for symbol, explicit, total in zip(elements, explicit_h, used):
        if explicit is not None:
            hydrogens.append(explicit)
        else:
            valence = next((v for v in _ORGANIC_VALENCES[symbol] if v >= total), total)
            hydrogens.append(valence - total)
    return elements, bonds, hydrogens


def same_bond_graph(smiles: str, z, edge_index, edge_order=None) -> bool:
    """Whether a perceived bond graph is the SMILES's: the same heavy-atom graph (elements and
    bonded hydrogens per atom, up to atom order), every hydrogen bonded to exactly one heavy
    atom, and, when ``edge_order`` is given, the same bond orders."""
    import networkx as nx
    from ase.data import chemical_symbols

    elements, bonds, hydrogens = smiles_graph(smiles)
    reference = nx.Graph()
    for k, (symbol, h) in enumerate(zip(elements, hydrogens)):
        reference.add_node(k, label=(symbol, h))
    reference.add_edges_from((a, b, {"order": k}) for a, b, k in bonds)

    z = [int(x) for x in z]
    sender, receiver = (edge_index[0].tolist(), edge_index[1].tolist())
    orders = edge_order.tolist() if edge_order is not None else [0] * len(sender)
    neighbours = [[] for _ in z]
    for j, i, k in zip(sender, receiver, orders):
        neighbours[i].append((j, k))
    for i, number in enumerate(z):
        if number == 1 and (len(neighbours[i]) != 1 or z[neighbours[i][0][0]] == 1):
            return False  # a hydrogen bonded to no atom, to two, or to another hydrogen
    perceived = nx.Graph()
    for i, number in enumerate(z):
        if number != 1:
            h = sum(1 for j, _ in neighbours[i] if z[j] == 1)
            perceived.add_node(i, label=(chemical_symbols[number], h))
    for i in perceived.nodes:
        for j, k in neighbours[i]:
            if j in perceived.nodes:
                perceived.add_edge(i, j, order=k)
    edge_match = (lambda a, b: a["order"] == b["order"]) if edge_order is not None else None
    return nx.is_isomorphic(reference, perceived, node_match=lambda a, b: a["label"] == b["label"], edge_match=edge_match)
