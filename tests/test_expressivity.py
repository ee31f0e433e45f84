"""The expressivity suite: the pairs are what they claim, and the models behave as theory says.

Construction tests check each pair's geometry against its definition (equal k-body
invariants, mirror images, one orientation turned into the other), so that a separation
or a failure measured on it means what the table says. Theory tests state, in their
docstrings, why a model must fail or can succeed, and assert it at random weights.
"""

import itertools
import math

import pytest
import torch

from geognn import expressivity as ex
from geognn.cli import main
from geognn.data import keys
from geognn.models import MODELS

SEEDS = (0, 1)


def separated(name, pair, depth, **options):
    """Whether every seed's random model separates the pair."""
    results = []
    for seed in SEEDS:
        model = ex.random_model(name, depth, seed, **options)
        results.append(ex.separation(model, pair, generator=torch.Generator().manual_seed(seed)).separated)
    assert len(set(results)) == 1, f"{name} at depth {depth} separates {pair.name} for some seeds only: {results}"
    return results[0]


def neighbours(pos):
    return pos[1:] - pos[0]


def multiset(rows):
    return sorted(tuple(round(float(x), 9) for x in row) for row in rows)


def congruent(a, b, proper):
    """Whether some permutation of b's neighbours and an orthogonal map (det +1 if proper) give a's."""
    for perm in itertools.permutations(range(len(b))):
        bp = b[list(perm)]
        if torch.allclose(a @ a.T, bp @ bp.T, atol=1e-9):
            rotation = torch.linalg.lstsq(a, bp).solution  # a @ rotation = bp
            if not proper or torch.linalg.det(rotation) > 0:
                return True
    return False


# ---- the pairs are what they claim ----

def test_two_body_pair_has_equal_distances_but_differs():
    pair = ex.two_body_pair()
    a, b = neighbours(pair.pos_a), neighbours(pair.pos_b)
    assert multiset(a.norm(dim=-1, keepdim=True)) == multiset(b.norm(dim=-1, keepdim=True))
    assert not congruent(a, b, proper=False)


def test_three_body_pair_has_equal_angle_triples_but_is_not_congruent():
    """Every (|r_j|, |r_k|, r_j . r_k) over pairs of neighbours occurs equally often in both."""
    pair = ex.three_body_pair()
    a, b = neighbours(pair.pos_a), neighbours(pair.pos_b)

    def triples(r):
        rows = []
        for j, k in itertools.combinations(range(len(r)), 2):
            rows.append(sorted([float(r[j].norm()), float(r[k].norm())]) + [float(r[j] @ r[k])])
        return multiset(rows)

    assert triples(a) == triples(b)
    assert not congruent(a, b, proper=False)


def triple_grams(r, signed=False):
    """Multiset over neighbour triples of their Gram matrix up to reordering (and det, if signed:
    then only cyclic reorderings, which keep its sign)."""
    rows = []
    for triple in itertools.combinations(range(len(r)), 3):
        orders = list(itertools.permutations(triple))
        if signed:
            orders = [triple[i:] + triple[:i] for i in range(3)]
        forms = []
        for order in orders:
            m = r[list(order)]
            form = [round(float(x), 9) for x in (m @ m.T).flatten()]
            forms.append(tuple(form + ([round(float(torch.linalg.det(m)), 9)] if signed else [])))
        rows.append(min(forms))
    return sorted(rows)


def neighbour_views(r):
    """Per neighbour: its length and the multiset of (length, dot product) with every other one."""
    return sorted((round(float(r[j].norm()), 9),
                   tuple(sorted((round(float(r[k].norm()), 9), round(float(r[j] @ r[k]), 9))
                                for k in range(len(r)) if k != j)))
                  for j in range(len(r)))


def test_four_body_pair_has_equal_unsigned_triples_but_differs():
    """Every triple of neighbours has the same Gram matrix in both (4-body invariants with the
    centre), signed volumes differ, and the environments are not congruent."""
    pair = ex.four_body_pair()
    a, b = neighbours(pair.pos_a), neighbours(pair.pos_b)
    assert triple_grams(a) == triple_grams(b)
    assert triple_grams(a, signed=True) != triple_grams(b, signed=True)
    assert not congruent(a, b, proper=False)


def test_chiral_pair_is_a_mirror_image_and_not_a_rotation():
    pair = ex.chiral_pair()
    a, b = neighbours(pair.pos_a), neighbours(pair.pos_b)
    assert congruent(a, b, proper=False)
    assert not congruent(a, b, proper=True)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_chains_share_every_bond_length_and_angle(k):
    pair = ex.k_chain_pair(k)
    assert pair.min_depth == k // 2 + 1 and pair.pos_a.shape == (k + 2, 3)

    def bonds_and_angles(pos):
        bonds = pos[1:] - pos[:-1]
        lengths = bonds.norm(dim=-1)
        cosines = (bonds[:-1] * bonds[1:]).sum(-1) / (lengths[:-1] * lengths[1:])
        return lengths, cosines

    for x, y in zip(bonds_and_angles(pair.pos_a), bonds_and_angles(pair.pos_b)):
        torch.testing.assert_close(x, y)
    ends = [(pos[0] - pos[-1]).norm() for pos in (pair.pos_a, pair.pos_b)]
    assert abs(float(ends[0] - ends[1])) > 0.1  # cis and trans ends: different end-to-end distances


@pytest.mark.parametrize("n", [2, 3, 5])
def test_symmetric_pair_is_one_ring_in_two_orientations(n):
    """The ring is n-fold symmetric, the second orientation is the first turned about the axis by
    a quarter period, and the probe (the last atom) only receives, from the centre."""
    pair = ex.symmetric_pair(n)
    ring_a, ring_b = pair.pos_a[1:-1], pair.pos_b[1:-1]
    turn = lambda angle: torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0],
                                        [0, 0, 1]], dtype=torch.float64)
    period = 2 * math.pi / n
    assert multiset(ring_a @ turn(period).T) == multiset(ring_a)
    assert multiset(ring_a @ turn(period / 4).T) == multiset(ring_b)
    assert multiset(ring_a) != multiset(ring_b)
    probe = n + 1
    assert not bool((pair.edge_index[0] == probe).any())
    assert pair.edge_index[:, pair.edge_index[1] == probe].tolist() == [[0], [probe]]


def test_bad_pair_and_variant_names():
    with pytest.raises(ValueError, match="unknown pair"):
        ex.parse_pair("5-body")
    with pytest.raises(ValueError, match="k >= 2"):
        ex.k_chain_pair(1)
    assert ex.parse_pair("6-chain").name == "6-chain"
    with pytest.raises(ValueError, match="unknown model"):
        ex.parse_variant("schnetz")
    with pytest.raises(ValueError, match="is the depth"):
        ex.parse_variant("nequip:num_layers=2")
    variant = ex.parse_variant("nequip:l_max=2,parity=false")
    assert variant.options == {"l_max": 2, "parity": False}


# ---- what theory says each model can and cannot do ----

@pytest.mark.parametrize("name,options", [("schnet", {}), ("egnn", {"update_coords": False})])
def test_distance_only_models_never_separate_the_two_body_pair(name, options):
    """On the star graph a distance-only model's messages see only centre-neighbour distances,
    equal in both structures: by induction over layers the centre's features are equal, and so
    are every neighbour's, at any depth. (EGNN without coordinate updates is such a model.)"""
    pair = ex.two_body_pair()
    for depth in (1, 2, 3):
        assert not separated(name, pair, depth, **options)


@pytest.mark.parametrize("name,depth,options", [
    ("dimenet++", 1, {}),  # the angle ∠ between the two neighbours enters the messages to them
    ("painn", 1, {}),  # |Σ_j w(r) r̂_j| at the centre differs (90° vs 180°)
    ("nequip", 2, {"l_max": 1}),  # layer 1 builds l = 1 features, layer 2 contracts them with r̂
    ("egnn", 2, {}),  # the centre moves in one structure and not the other; layer 2 sees new distances
])
def test_angular_and_equivariant_models_separate_the_two_body_pair(name, depth, options):
    assert separated(name, ex.two_body_pair(), depth, **options)


def test_nequip_with_one_layer_is_a_two_body_model():
    """NequIP's last layer outputs scalars only, from Y^0 of each edge alone: with one layer
    the energy is a sum over edges of functions of distances, and the 2-body pair looks alike."""
    assert not separated("nequip", ex.two_body_pair(), 1, l_max=2)


def test_dimenet_on_a_star_never_separates_the_four_body_pair():
    """On a star graph a neighbour's only neighbour is the centre, so DimeNet's messages into
    the centre never carry angles, and the message to neighbour j, at every block, is a
    function of j's distance and the multiset of (distance, angle at the centre) of the
    others: j's view. The 4-body pair has the same views (asserted here), so DimeNet++ is
    blind to it at any depth, although it separates the 3-body pair, whose views differ."""
    four, three = ex.four_body_pair(), ex.three_body_pair()
    assert neighbour_views(neighbours(four.pos_a)) == neighbour_views(neighbours(four.pos_b))
    assert neighbour_views(neighbours(three.pos_a)) != neighbour_views(neighbours(three.pos_b))
    for depth in (1, 2, 3):
        assert not separated("dimenet++", four, depth)
    assert separated("dimenet++", three, 1)
    # PaiNN with the paper's norm, sqrt(‖Vv‖² + 1e-8), separates it at depth 3, by about 1e-11 of the
    # energy: the norm's 1/ε-sized curvature where vectors nearly cancel lifts higher-order terms above
    # float64 noise. With the smooth default, sqrt(‖Vv‖² + 1) - 1, those terms stay below it.
    assert separated("painn", four, 3, vector_norm="paper")
    assert not separated("painn", four, 3)


def test_painn_needs_two_layers_for_the_three_body_pair():
    """PaiNN's first layer gives the centre Σ_j w(r_j) r̂_j per channel and scalars from its
    norms and inner products: sums over neighbour pairs of (distance, distance, angle)
    functions, equal for the 3-body pair (their multisets agree). The second layer feeds those
    vectors back through the neighbours, a higher body order, and separates them."""
    pair = ex.three_body_pair()
    assert not separated("painn", pair, 1)
    assert separated("painn", pair, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_model_separates_mirror_images(name):
    """Every geognn model is invariant under reflections (E(3)), and the chiral pair is a
    structure and its mirror image: the outputs agree at every depth."""
    pair = ex.chiral_pair()
    for depth in (1, 2):
        assert not separated(name, pair, depth)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_chain_needs_its_minimum_depth(k):
    """Fewer than k//2 + 1 steps: no atom's receptive field holds both ends, each atom's view
    is congruent in the two chains (the chains are planar, so a mirror in the plane is a
    rotation), and no model can separate them. PaiNN reaches that bound: the first atom to see
    both ends forms inner products of vectors carrying each end's side."""
    pair = ex.k_chain_pair(k)
    assert not separated("painn", pair, pair.min_depth - 1)
    assert separated("painn", pair, pair.min_depth)


@pytest.mark.parametrize("name", ["schnet", "dimenet++"])
def test_invariant_models_never_separate_k_chains(name):
    """Both chains have the same bond lengths and the same angles along every path; what differs
    is a dihedral-like relation of the two ends, which distances and angles do not carry."""
    pair = ex.k_chain_pair(3)
    for depth in (2, 3):
        assert not separated(name, pair, depth)


@pytest.mark.parametrize("n,l_max,sees", [(2, 1, False), (2, 2, True), (3, 2, False), (3, 3, True), (4, 3, False)])
def test_nequip_sees_an_n_fold_orientation_only_with_l_max_at_least_n(n, l_max, sees):
    """The centre's features are an equivariant function of an n-fold symmetric environment,
    hence invariant under the n-fold rotation; in the axis frame that leaves components
    m ≡ 0 (mod n) only, so for l < n only m = 0, which every turn about the axis leaves alone.
    The probe reads the same features in both orientations unless l_max >= n."""
    assert separated("nequip", ex.symmetric_pair(n), 2, l_max=l_max, atomic_numbers=(1, 6)) is sees


def test_cartesian_vector_models_do_not_see_symmetric_orientations():
    """PaiNN's vectors are l = 1 features: for n >= 2 they vanish at the centre of the ring."""
    for n in (2, 3):
        assert not separated("painn", ex.symmetric_pair(n), 2)


# ---- the measurement: the separation rule, and what pair_outputs feeds a model ----

class FakeModel:
    """Stands in for a model in `pair_outputs`/`separation`: the energy of each structure in the
    batch is ``energy_of(pos)``, pos [G, N, 3] (every structure of a pair has N atoms). It keeps
    the positions it was given, so a test can see what the model saw."""

    def __init__(self, energy_of):
        self.energy_of = energy_of
        self.seen = None

    def __call__(self, data, edge_index=None):
        self.seen = data.pos.view(data.num_graphs, -1, 3).clone()
        return {keys.ENERGY: self.energy_of(self.seen)}


def controlled_model(value_a, value_b, noise=0.0, noisy="ab"):
    """An invariant fake for the 2-body pair: energy value_a on structure a and value_b on b (told
    apart by the distance between the two neighbours, 2.1 Å vs 3 Å), plus ``noise`` on the first
    copy of each structure named in ``noisy``, so that structure's spread over rotations is noise."""

    def energy_of(pos):
        is_b = (pos[:, 1] - pos[:, 2]).norm(dim=-1) > 2.5
        energy = torch.full((pos.shape[0],), value_a, dtype=torch.float64)
        energy[is_b] = value_b
        for structure, mask in (("a", ~is_b), ("b", is_b)):
            if structure in noisy:
                energy[int(mask.nonzero()[0])] += noise
        return energy

    return FakeModel(energy_of)


def test_separation_needs_a_gap_far_above_the_noise():
    """A gap of 10x the rotation noise could be noise; 1,000x cannot. At exactly NOISE_FACTOR x the
    noise the gap does not exceed it."""
    noise = 1e-6
    assert not ex.Separation(gap=10 * noise, noise=noise, scale=1.0).separated
    assert ex.Separation(gap=1000 * noise, noise=noise, scale=1.0).separated
    assert not ex.Separation(gap=ex.NOISE_FACTOR * 0.5, noise=0.5, scale=1.0).separated


def test_separation_noise_is_at_least_a_few_roundings_of_the_output():
    """Three rotations may give bit-identical outputs (zero spread); float64 rounding of outputs of
    size `scale` is still there, so the noise counts as at least ROUNDING * scale."""
    scale = 1e3
    floor = ex.ROUNDING * scale
    assert not ex.Separation(gap=10 * floor, noise=0.0, scale=scale).separated
    assert not ex.Separation(gap=10 * floor, noise=floor / 100, scale=scale).separated
    assert ex.Separation(gap=1000 * floor, noise=0.0, scale=scale).separated


@pytest.mark.parametrize("noisy", ["a", "b", "ab"])
def test_separation_measures_the_gap_against_each_structures_spread(noisy):
    """End to end through `separation`, with a fake model whose outputs are set: the noise is the
    spread of whichever structure spreads, and the rule of the test above decides."""
    pair, noise = ex.two_body_pair(), 1e-6
    result = ex.separation(controlled_model(1.0, 1.0 + 10 * noise, noise, noisy), pair)
    assert result.noise == pytest.approx(noise, rel=1e-6)
    assert result.gap == pytest.approx(10 * noise, rel=1e-6)
    assert not result.separated
    assert ex.separation(controlled_model(1.0, 1.0 + 1000 * noise, noise, noisy), pair).separated


def test_separation_without_noise_still_needs_a_gap_above_rounding():
    pair, scale = ex.two_body_pair(), 1e3
    floor = ex.ROUNDING * scale
    result = ex.separation(controlled_model(scale, scale + 10 * floor), pair)
    assert result.noise == 0.0 and result.gap > 0.0
    assert not result.separated
    assert ex.separation(controlled_model(scale, scale + 1000 * floor), pair).separated


def test_pair_outputs_rotates_and_translates_each_structure():
    """Probes that are not invariant must spread over the copies of structure a and, separately,
    of b: a bond's direction (blind to translations) shows the rotations, the centre's position
    (at the origin before the move, so blind to rotations) shows the translations. Every copy the
    model sees is its own structure under a proper rotation and a shift."""
    pair, num_rotations = ex.three_body_pair(), 8
    direction = torch.tensor([0.36, 0.48, 0.8], dtype=torch.float64)
    bond = FakeModel(lambda pos: (pos[:, 1] - pos[:, 0]) @ direction)
    centre = FakeModel(lambda pos: pos[:, 0] @ direction)
    for probe in (bond, centre):
        energy = ex.pair_outputs(probe, pair, num_rotations, torch.Generator().manual_seed(0))
        assert energy.shape == (2, num_rotations)
        spread = energy.max(dim=1).values - energy.min(dim=1).values
        assert (spread > 0.5).all(), f"outputs of a and b should spread over rotations and shifts: {spread}"
        result = ex.separation(probe, pair, num_rotations, torch.Generator().manual_seed(0))
        assert result.noise == pytest.approx(float(spread.max()))
    seen = bond.seen.view(2, num_rotations, *pair.pos_a.shape)
    for original, copies in zip((pair.pos_a, pair.pos_b), seen):
        for moved in copies:
            shift = moved[0]  # the centre, at the origin in the original
            rotation_t = torch.linalg.lstsq(original[1:], moved[1:] - shift).solution  # original @ R.T = moved - shift
            torch.testing.assert_close(original @ rotation_t + shift, moved)
            torch.testing.assert_close(rotation_t.T @ rotation_t, torch.eye(3, dtype=torch.float64))
            assert float(torch.linalg.det(rotation_t)) == pytest.approx(1.0)
            assert float((rotation_t - torch.eye(3, dtype=torch.float64)).abs().max()) > 0.1


# ---- the table and the command ----

def test_run_builds_the_table_and_markdown():
    variants = [ex.Variant("schnet", "schnet"), ex.Variant("painn", "painn")]
    table = ex.run(variants, [ex.two_body_pair(), ex.k_chain_pair(2)], depths=(1, 2), seeds=(0,))
    assert table.separated_depths("painn", "2-body") == [1, 2]
    assert table.separated_depths("painn", "2-chain") == [2]
    assert table.separated_depths("schnet", "2-body") == []
    text = ex.report(table)
    assert "| painn | 1-2 | 2 |" in text and "| schnet | — | — |" in text
    with pytest.raises(ValueError, match="depths must be positive"):
        ex.run(variants, depths=(0,))


def test_expressivity_command(tmp_path, capsys):
    out = tmp_path / "expressivity.md"
    code = main(["expressivity", "--models", "schnet", "painn", "--pairs", "2-body", "--depths", "1",
                 "--seeds", "1", "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| schnet | — |" in printed and "| painn | 1 |" in printed
    assert out.read_text() in printed
    assert main(["expressivity", "--pairs", "7-body"]) == 1
    assert "unknown pair" in capsys.readouterr().err


@pytest.mark.parametrize("correlation, separates, blind_to", [
    (1, [], "2-body"),  # B = A^0e = Σ_j R(r_ij): distances only
    (2, ["2-body"], "3-body"),  # A ⊗ A: pairs of neighbours, so (r_j, r_k, angle) triples, equal in the 3-body pair
    (3, ["2-body", "3-body"], "4-body"),  # triples of neighbours; the 4-body pair's unsigned triples agree
])
def test_one_mace_layer_has_body_order_correlation_plus_one(correlation, separates, blind_to):
    """One MACE layer on a star: the centre's energy is a polynomial of degree ``correlation`` in its
    neighbour density A (the atomic cluster expansion), a (correlation + 1)-body function; the
    neighbours see the centre alone. So one layer of correlation ν separates what (ν+1)-body
    invariants separate and no more (Batatia et al. 2022; the geometric-gnn-dojo reports the same)."""
    pairs = {"2-body": ex.two_body_pair(), "3-body": ex.three_body_pair(), "4-body": ex.four_body_pair()}
    options = {"correlation": correlation, "atomic_numbers": (1, 6)}
    for name in separates:
        assert separated("mace", pairs[name], 1, **options), name
    assert not separated("mace", pairs[blind_to], 1, **options)
    assert not separated("mace", ex.chiral_pair(), 2, **options)  # O(3)-invariant: mirror images alike
