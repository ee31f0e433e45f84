"""The pieces of the training loop, each against what it must compute."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from geognn.training.config import DataSection, LossSection, OptimSection
from geognn.training.data import EpochBatches, Target, load_splits, shard
from geognn.training.ema import ExponentialMovingAverage
from geognn.training.loss import ErrorStats, Loss, format_metrics
from geognn.training.schedule import LRSchedule
from tests.training.conftest import SAMPLES


# ---------------------------------------------------------------- batches


def test_epoch_batches_fixed_by_seed_and_epoch():
    first = list(EpochBatches(50, 8, seed=3, epoch=2))
    assert first == list(EpochBatches(50, 8, seed=3, epoch=2))
    assert first != list(EpochBatches(50, 8, seed=3, epoch=3))
    assert sorted(i for batch in first for i in batch) == list(range(50))  # every structure once per epoch
    # Resuming at batch 4 of the epoch gives the remaining batches of the same order.
    assert list(EpochBatches(50, 8, seed=3, epoch=2, start=4)) == first[4:]
    assert len(EpochBatches(50, 8, seed=3, epoch=2, start=4)) == len(first) - 4


def test_epoch_batches_shard_global_batches_across_processes():
    single = list(EpochBatches(23, 6, seed=1, epoch=0))  # global batches of 6 = 2 processes × 3
    ranks = [list(EpochBatches(23, 3, seed=1, epoch=0, world_size=2, rank=r)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for whole, part0, part1 in zip(single, *ranks):
        assert sorted(part0 + part1) == sorted(whole) and not set(part0) & set(part1)
    # A last global batch smaller than the number of processes is dropped, so no process idles.
    three = [list(EpochBatches(10, 3, seed=0, epoch=0, world_size=3, rank=r)) for r in range(3)]
    assert all(len(batches) == 1 for batches in three)  # 9 + a remainder of 1 < 3 processes


def test_shard_covers_every_structure_once():
    parts = [shard(11, 3, rank) for rank in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))


# ---------------------------------------------------------------- splits


def test_load_splits_subset_and_split(tmp_path):
    section = DataSection(dataset="qm9", options={"root": str(tmp_path), "source": str(SAMPLES / "qm9_xyz")},
                          subset=25, split=[15, 5, None])
    dataset, (train, val, test), target = load_splits(section, torch.float64)
    assert (len(dataset), len(train), len(val), len(test)) == (25, 15, 5, 5)
    ids = [set(int(d.idx) for d in part) for part in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert target == Target("U0", "eV", False)
    again = load_splits(section, torch.float64)[1][0]
    assert [int(d.idx) for d in again] == [int(d.idx) for d in train]  # seeded


def test_group_split_keeps_groups_whole_and_fills_parts():
    from geognn.data.collated import group_split_indices

    g = torch.Generator().manual_seed(0)
    groups = torch.repeat_interleave(torch.arange(60), torch.randint(1, 12, (60,), generator=g))
    parts = group_split_indices(groups, [0.7, 0.15, None], seed=3)
    assert sorted(torch.cat(parts).tolist()) == list(range(groups.numel()))  # each structure once
    owners = [set(groups[p].tolist()) for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    largest = int(torch.bincount(groups).max())
    assert 0 <= len(parts[0]) - int(0.7 * groups.numel()) < largest  # full, overshooting by under one group
    assert all(len(p) > 0 for p in parts)
    assert [p.tolist() for p in group_split_indices(groups, [0.7, 0.15, None], seed=3)] == [p.tolist() for p in parts]
    few = torch.tensor([0, 0, 1, 1, 2, 2])
    assert all(len(p) == 2 for p in group_split_indices(few, [0.6, 0.2, None], seed=0))  # one molecule each
    with pytest.raises(ValueError, match="only 2 group"):
        group_split_indices(torch.tensor([0, 0, 1, 1]), [0.5, 0.25, None])


def test_split_by_molecule_on_ase_data(tmp_path):
    """data.split_by: molecule puts every configuration of a QM9 molecule in one split (the
    sample has 3 molecules x 5 configurations); a dataset without molecule ids is refused."""
    from geognn.training.config import ConfigError

    options = {"paths": str(SAMPLES / "qm9_xtb_sample.extxyz"), "group_by": "qm9_index", "cache": False}
    section = DataSection(dataset="ase", options=options, split=[0.6, 0.2, None], split_by="molecule")
    _, parts, _ = load_splits(section, torch.float64)
    molecules = [{int(d.group) for d in part} for part in parts]
    assert [len(m) for m in molecules] == [1, 1, 1] and [len(p) for p in parts] == [5, 5, 5]
    assert not (molecules[0] & molecules[1] or molecules[0] & molecules[2] or molecules[1] & molecules[2])
    by_structure = load_splits(DataSection(dataset="ase", options=options, split=[0.6, 0.2, None]), torch.float64)[1]
    assert any(len({int(d.group) for d in part}) > 1 for part in by_structure)  # the default mixes molecules
    with pytest.raises(ConfigError, match="does not record molecules"):
        load_splits(DataSection(dataset="ase", options={"paths": options["paths"], "cache": False},
                                split_by="molecule"), torch.float64)
    with pytest.raises(ConfigError, match="data.split_by"):
        DataSection(split_by="atoms")


def test_load_splits_target_kinds(tmp_path):
    section = DataSection(dataset="qm9", options={"root": str(tmp_path), "source": str(SAMPLES / "qm9_xyz"),
                                                  "target": "gap"}, split=[20, 5, None])
    assert load_splits(section, torch.float64)[2] == Target("gap", "eV", True, potential_energy=False)
    section.options["target"] = "mu"
    assert load_splits(section, torch.float64)[2] == Target("mu", "D", False, potential_energy=False)
    assert Target("mu", "D", False).display == (1.0, "D") and Target("U0", "eV", False).display == (1000.0, "meV")


# ---------------------------------------------------------------- losses and metrics


def _errors(generator, num_structures, num_atoms):
    return {
        "energy": torch.randn(num_structures, generator=generator, dtype=torch.float64),
        "energy_per_atom": torch.randn(num_structures, generator=generator, dtype=torch.float64),
        "forces": torch.randn(num_atoms, 3, generator=generator, dtype=torch.float64),
    }


@pytest.mark.parametrize("kind", ["mse", "mae", "huber"])
def test_loss_split_across_processes_equals_whole_batch(kind):
    """Two halves combined with global counts (what DDP does) give the whole batch's loss."""
    loss = Loss(LossSection(energy_weight=2.0, forces_weight=5.0, kind=kind, huber_delta=0.5))
    g = torch.Generator().manual_seed(0)
    a, b = _errors(g, 3, 20), _errors(g, 5, 31)
    whole = {name: torch.cat([a[name], b[name]]) for name in a}
    sums_a, sums_b = loss.sums(a), loss.sums(b)
    counts = {name: sums_a[name][1] + sums_b[name][1] for name in sums_a}
    split = loss.combine(sums_a, counts) + loss.combine(sums_b, counts)
    assert torch.allclose(split, loss.combine(loss.sums(whole)), rtol=1e-14)
    # And the whole-batch loss is the weighted mean elementwise loss.
    elementwise = {"mse": torch.square, "mae": torch.abs}.get(kind)
    if elementwise is not None:
        expected = 2.0 * elementwise(whole["energy"]).mean() + 5.0 * elementwise(whole["forces"]).mean()
        assert torch.allclose(loss.combine(loss.sums(whole)), expected, rtol=1e-14)


def test_loss_per_atom_energy_term():
    loss = Loss(LossSection(energy_weight=1.0, energy_per_atom=True, kind="mae"))
    errors = _errors(torch.Generator().manual_seed(1), 4, 9)
    assert torch.allclose(loss.combine(loss.sums(errors)), errors["energy_per_atom"].abs().mean())
    assert not loss.wants_forces and not loss.wants_stress


def test_error_stats_match_numpy():
    g = torch.Generator().manual_seed(2)
    batches = [_errors(g, n, 3 * n) for n in (3, 7)]
    stats = ErrorStats()
    for errors in batches:
        stats.update(errors)
    result = stats.result()
    energy = np.concatenate([b["energy"].numpy() for b in batches])
    forces = np.concatenate([b["forces"].numpy().ravel() for b in batches])
    assert result["energy_mae"] == pytest.approx(np.abs(energy).mean(), rel=1e-12)
    assert result["energy_rmse"] == pytest.approx(np.sqrt((energy ** 2).mean()), rel=1e-12)
    assert result["forces_rmse"] == pytest.approx(np.sqrt((forces ** 2).mean()), rel=1e-12)
    assert "stress_mae" not in result
    text = format_metrics({"energy_mae": 0.0123, "energy_per_atom_mae": 0.001, "forces_mae": 0.0456})
    assert text == "energy MAE 12.3 meV, energy per atom MAE 1 meV/atom, forces MAE 45.6 meV/Å"
    # the target's own name and unit; no per-atom figure for intensive targets or non-energies
    assert format_metrics({"energy_mae": 0.5, "energy_per_atom_mae": 0.1}, unit="D", target="mu") == "mu MAE 0.5 D"
    gap = {"target": "gap", "intensive": True, "energy_mae": 0.12, "energy_per_atom_mae": 0.01}
    assert format_metrics(gap) == "gap MAE 120 meV"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_error_stats_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(2)
    batches = [_errors(g, n, 3 * n) for n in (3, 7)]
    results = []
    for device in ("cpu", "cuda"):
        stats = ErrorStats()
        for errors in batches:
            stats.update({name: error.to(device) for name, error in errors.items()})
        results.append(stats.result())
    assert results[1] == pytest.approx(results[0], rel=1e-12)


# ---------------------------------------------------------------- schedule and EMA


def _schedule(**options):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return LRSchedule(optimizer, OptimSection(**options), total_steps=101)


def test_warmup_then_cosine():
    schedule = _schedule(lr=1e-3, min_lr=1e-5, warmup_steps=10, scheduler="cosine")
    assert schedule.lr_at(0) == pytest.approx(1e-4) and schedule.lr_at(9) == pytest.approx(1e-3)
    assert schedule.lr_at(10) == pytest.approx(1e-3)
    assert schedule.lr_at(100) == pytest.approx(1e-5)
    middle = 10 + (100 - 10) / 2
    assert schedule.lr_at(int(middle)) == pytest.approx((1e-3 + 1e-5) / 2)
    assert schedule.set_step(5) == schedule.optimizer.param_groups[0]["lr"] == pytest.approx(6e-4)


def test_plateau_reduces_after_patience_and_resumes():
    schedule = _schedule(lr=1.0, scheduler="plateau", plateau_patience=2, plateau_factor=0.5, min_lr=0.2)
    for value in (1.0, 0.9, 0.95, 0.95):  # improves twice, then two bad evaluations: not yet
        schedule.observe(value)
    assert schedule.lr_at(50) == 1.0
    schedule.observe(0.95)  # third bad evaluation > patience
    assert schedule.lr_at(50) == 0.5
    copy = _schedule(lr=1.0, scheduler="plateau", plateau_patience=2, plateau_factor=0.5, min_lr=0.2)
    copy.load_state_dict(schedule.state_dict())
    for value in (0.95,) * 6:
        schedule.observe(value)
        copy.observe(value)
    assert schedule.lr_at(50) == copy.lr_at(50) == 0.2  # clamped at min_lr


def test_ema_average_and_swap():
    model = nn.Linear(2, 1)
    ema = ExponentialMovingAverage(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2/11) = 2/11
    expected = start * (2 / 11) + 1.0 * (9 / 11)
    assert torch.allclose(ema.shadow["weight"], expected)
    for _ in range(60):
        ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.ones_like(start), atol=1e-12)
    with torch.no_grad():
        model.weight.fill_(3.0)
    with ema.swapped(model):
        assert torch.allclose(model.weight, torch.ones_like(start))
    assert torch.all(model.weight == 3.0)
    other = ExponentialMovingAverage(nn.Linear(2, 1), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 61 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="does not match"):
        ExponentialMovingAverage(nn.Linear(3, 1, bias=False), 0.9).load_state_dict(ema.state_dict())
    assert math.isclose(ema.decay, 0.5)


def test_prediction_errors_per_atom_divide_by_each_structures_size():
    """energy_per_atom = (prediction - label) / n for each structure of a batch of 3, 5 and 9 atoms."""
    from torch_geometric.data import Batch, Data

    from geognn.training.loss import prediction_errors

    sizes = [3, 5, 9]
    labels = [-10.0, 4.0, 30.0]
    batch = Batch.from_data_list([
        Data(z=torch.ones(n, dtype=torch.long), pos=torch.zeros(n, 3, dtype=torch.float64),
             energy=torch.tensor([label], dtype=torch.float64))
        for n, label in zip(sizes, labels)
    ])
    predicted = torch.tensor([-7.0, 9.0, 12.0], dtype=torch.float64)
    errors = prediction_errors({"energy": predicted}, batch, want_forces=False, want_stress=False)
    expected = [(p - label) / n for p, label, n in zip(predicted.tolist(), labels, sizes)]
    assert errors["energy"].tolist() == [p - label for p, label in zip(predicted.tolist(), labels)]
    assert errors["energy_per_atom"].tolist() == pytest.approx(expected, rel=1e-15)
