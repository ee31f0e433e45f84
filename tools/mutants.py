"""Mutation check: do the tests catch realistic one-line bugs in geognn?

Each mutant below is a plausible mistake in the physics, data or comparison
code (a missing unit factor, a wrong input wired into a formula, a cache key
that forgets an option), with the tests that must catch it. The script copies
the repository to a temporary folder, applies one mutant at a time there (the
working tree is never touched), runs the named tests with the copy first on
``sys.path``, and reports which mutants the tests caught.

Run on demand, not in CI (a full run takes about ten minutes on 2 cores)::

    python tools/mutants.py               # every mutant
    python tools/mutants.py -k cache md   # mutants whose name contains "cache" or "md"
    python tools/mutants.py --list

The named tests are first run on the unmutated copy and must pass. Exit status
1 when a mutant survives (its tests all pass), 2 when a mutant no longer
applies (its original text is not found exactly once: the code moved on, so
update the mutant) or the unmutated tests fail. The last full run is recorded in ``tests/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids or files; at least one must fail
    why: str = ""


MUTANTS: list[Mutant] = [
    # ---- data: caches that cannot go stale ----
    Mutant("cache/ase-label-keys", "geognn/data/ase_dataset.py",
           '"label_keys": sorted(self.label_keys.items()),', "",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",),
           "custom label keys would return the default keys' labels from the cache"),
    Mutant("cache/ase-dtype", "geognn/data/ase_dataset.py", '"dtype": str(self.dtype),', "",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",),
           "a float64 load would return the float32 cache"),
    Mutant("cache/ase-energy-unit", "geognn/data/ase_dataset.py", '"energy_unit": energy_unit,', "",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",)),
    Mutant("cache/ase-index", "geognn/data/ase_dataset.py", 'content = {"index": repr(index),', "content = {",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",)),
    Mutant("cache/ase-group-by", "geognn/data/ase_dataset.py", '"group_by": group_by,', "",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",)),
    Mutant("cache/ase-format", "geognn/data/ase_dataset.py", '"format": format,', "",
           ("tests/data/test_ase_dataset.py::test_the_cache_never_returns_another_options_content",)),
    Mutant("cache/ase-stored-key-unchecked", "geognn/data/ase_dataset.py",
           'if stored.get("files") != self._files_digest or stored.get("content") != self._content_key:',
           "if False:",
           ("tests/data/test_ase_dataset.py::test_a_cache_whose_stored_key_differs_is_not_used",)),
    Mutant("cache/fingerprint-by-time-stamp", "geognn/data/collated.py",
           '        with open(path, "rb") as handle:\n            while chunk := handle.read(1 << 20):\n'
           '                contents.update(chunk)\n',
           "        contents.update(f\"{Path(path).stat().st_size}|{Path(path).stat().st_mtime_ns}\".encode())\n",
           ("tests/data/test_ase_dataset.py::test_the_cache_follows_the_contents_not_the_time_stamp",
            "tests/data/test_qm9.py::test_the_cache_follows_the_contents_of_the_source"),
           "an edit keeping size and time stamp would reuse the old cache"),
    Mutant("cache/qm9-format-version", "geognn/data/qm9.py",
           'if stored.get("format_version") == FORMAT_VERSION and stored.get("inputs") == fingerprint:',
           'if stored.get("inputs") == fingerprint:',
           ("tests/data/test_qm9.py::test_a_cache_of_another_format_or_source_is_not_used",)),
    Mutant("cache/qm9-uncharacterized-not-keyed", "geognn/data/qm9.py",
           "                inputs.append(Path(uncharacterized))\n", "                pass\n",
           ("tests/data/test_qm9.py::test_the_cache_follows_the_contents_of_the_source",)),
    Mutant("cache/xtb-geometry-not-in-manifest", "geognn/data/xtb.py",
           '"geometry": _geometry_digest(molecules)}', "}",
           ("tests/data/test_xtb.py::test_a_resume_from_other_geometries_or_source_is_refused",)),
    Mutant("cache/xtb-source-unchecked", "geognn/data/xtb.py",
           'if stored.get("source") is not None and stored["source"] != _source_name(source):', "if False:",
           ("tests/data/test_xtb.py::test_a_resume_from_other_geometries_or_source_is_refused",)),
    # ---- MD and relaxation in ASE's units (1 fs = units.fs, friction per fs) ----
    Mutant("md/timestep-without-fs", "geognn/dynamics.py", "timestep = timestep_fs * units.fs",
           "timestep = timestep_fs", ("tests/test_dynamics.py::test_nve_moves_atoms_by_v_t_plus_f_t2_over_2m_with_t_in_fs",),
           "a time step about 10x too long"),
    Mutant("md/friction-times-fs", "geognn/dynamics.py", "friction=friction_per_fs / units.fs",
           "friction=friction_per_fs * units.fs", ("tests/test_dynamics.py::test_langevin_velocities_forget_their_start_at_the_friction_rate",),
           "a Langevin friction about 100x too weak"),
    Mutant("md/friction-without-fs", "geognn/dynamics.py", "friction=friction_per_fs / units.fs",
           "friction=friction_per_fs", ("tests/test_dynamics.py::test_langevin_velocities_forget_their_start_at_the_friction_rate",)),
    Mutant("md/bath-temperature-in-eV", "geognn/dynamics.py", "timestep=timestep, temperature_K=temperature_K,",
           "timestep=timestep, temperature=temperature_K,", ("tests/test_dynamics.py::test_langevin_holds_the_asked_temperature",),
           "kelvin passed where ASE takes kT in eV"),
    Mutant("md/bath-temperature-kT", "geognn/dynamics.py", "timestep=timestep, temperature_K=temperature_K,",
           "timestep=timestep, temperature_K=temperature_K * units.kB,", ("tests/test_dynamics.py::test_langevin_holds_the_asked_temperature",)),
    Mutant("md/start-temperature-kT", "geognn/dynamics.py",
           "MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)",
           "MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K * units.kB, rng=rng)",
           ("tests/test_dynamics.py::test_nve_starts_free_atoms_at_the_asked_temperature",)),
    Mutant("md/reported-time-in-ase-units", "geognn/dynamics.py", "return dynamics.get_time() / units.fs",
           "return dynamics.get_time()", ("tests/test_dynamics.py::test_nve_moves_atoms_by_v_t_plus_f_t2_over_2m_with_t_in_fs",)),
    Mutant("relax/fmax-largest-component", "geognn/dynamics.py",
           "np.sqrt((target.get_forces() ** 2).sum(axis=1).max())", "np.abs(target.get_forces()).max()",
           ("tests/test_dynamics.py::test_relax_reports_the_largest_per_atom_force_norm",), "fmax is the largest per-atom force norm"),
    Mutant("relax/fmax-over-all-atoms", "geognn/dynamics.py",
           "np.sqrt((target.get_forces() ** 2).sum(axis=1).max())", "np.sqrt((target.get_forces() ** 2).sum())",
           ("tests/test_dynamics.py::test_relax_reports_the_largest_per_atom_force_norm",)),
    Mutant("relax/fmax-not-passed", "geognn/dynamics.py", "runner.run(fmax=fmax, steps=steps)",
           "runner.run(steps=steps)", ("tests/test_dynamics.py::test_relax_stops_at_the_first_step_below_fmax",)),
    # ---- models: structure-level readout, 2D baselines ----
    Mutant("readout/mean-offset-summed", "geognn/models/base.py",
           "offset = scatter(offset, batch, dim=0, dim_size=num_graphs, reduce=reduce)",
           'offset = scatter(offset, batch, dim=0, dim_size=num_graphs, reduce="sum")',
           ("tests/models/test_bond_models.py::test_structure_level_output_gets_scale_shift_and_references",),
           "a mean readout would add the per-atom shift and references as a sum"),
    Mutant("readout/sum-offset-averaged", "geognn/models/base.py",
           "offset = scatter(offset, batch, dim=0, dim_size=num_graphs, reduce=reduce)",
           'offset = scatter(offset, batch, dim=0, dim_size=num_graphs, reduce="mean")',
           ("tests/models/test_bond_models.py::test_structure_level_output_gets_scale_shift_and_references",)),
    Mutant("mpnn/aggr-ignored", "geognn/models/mpnn.py",
           "self.message = NNConv(F, F, edge_network, aggr=config.aggr)", "self.message = NNConv(F, F, edge_network)",
           ("tests/models/test_bond_models.py::test_mpnn_step_by_hand",)),
    # ---- comparison: the leaderboard's statistics, learning curves, search, paired statistics ----
    Mutant("compare/force-std-from-energies", "geognn/training/report.py",
           '"forces_mae_std": _std(forces) if forces else None,', '"forces_mae_std": _std(maes) if forces else None,',
           ("tests/training/test_compare.py::test_leaderboard_std_of_each_error_is_over_that_error",)),
    Mutant("compare/energy-std-from-forces", "geognn/training/report.py",
           '"energy_mae_std": _std(maes),', '"energy_mae_std": _std(forces),',
           ("tests/training/test_compare.py::test_leaderboard_std_of_each_error_is_over_that_error",)),
    Mutant("compare/force-mean-from-energies", "geognn/training/report.py",
           '"forces_mae": _mean(forces) if forces else None,', '"forces_mae": _mean(maes) if forces else None,',
           ("tests/training/test_compare.py::test_leaderboard_std_of_each_error_is_over_that_error",)),
    Mutant("compare/table-prints-energy-std-for-forces", "geognn/training/report.py",
           '_scaled(s["forces_mae_std"], unit)[0]))', '_scaled(s["energy_mae_std"], unit)[0]))',
           ("tests/training/test_compare.py::test_leaderboard_std_of_each_error_is_over_that_error",)),
    Mutant("compare/ranks-ignore-significance", "geognn/training/report.py",
           'significant = {(p["better"], p["worse"]): p["significant"] for p in pairs}',
           'significant = {(p["better"], p["worse"]): True for p in pairs}',
           ("tests/training/test_compare_report.py::test_paired_statistics_rank_and_report",)),
    Mutant("compare/force-pairs-from-energies", "geognn/training/report.py",
           'key = "forces" if metric == "forces_mae" else "energy"', 'key = "energy"',
           ("tests/training/test_compare_report.py::test_force_comparison_ranks_by_force_mae_and_leaves_out_2d_models",)),
    Mutant("compare/train-size-not-nested", "geognn/training/data.py",
           "return train.index_select(torch.arange(size))",
           "return train.index_select(torch.arange(len(train) - size, len(train)))",
           ("tests/training/test_compare_report.py::test_train_size_keeps_nested_subsets_and_the_same_validation_and_test",)),
    Mutant("compare/train-size-cuts-a-molecule", "geognn/training/data.py",
           "taken = int(torch.searchsorted(torch.cumsum(counts[order], 0), size)) + 1",
           "taken = int(torch.searchsorted(torch.cumsum(counts[order], 0), size))",
           ("tests/training/test_compare_report.py::test_train_size_by_molecule_takes_whole_molecules",)),
    Mutant("compare/search-trial-sees-test", "geognn/training/search.py",
           "callbacks=[_Pruning(trial, settings.pruning)], test=False)",
           "callbacks=[_Pruning(trial, settings.pruning)], test=True)",
           ("tests/training/test_compare_report.py::test_search_gives_every_model_the_same_trials_and_trains_the_best",)),
    Mutant("compare/search-best-is-the-last-trial", "geognn/training/search.py",
           "best = min(finished, key=lambda t: t.value)", "best = finished[-1]",
           ("tests/training/test_compare_report.py::test_search_gives_every_model_the_same_trials_and_trains_the_best",)),
    Mutant("compare/pruning-ignored", "geognn/training/search.py",
           'trainer.request_stop("pruned")', "pass",
           ("tests/training/test_compare_report.py::test_pruning_stops_a_trial_worse_than_the_median",)),
    # ---- activations: continuity ----
    Mutant("softplus/torch-threshold", "geognn/nn/mlp.py", "SOFTPLUS_THRESHOLD = 40.0", "SOFTPLUS_THRESHOLD = 20.0",
           ("tests/nn/test_mlp.py::test_softplus_is_continuous_where_torch_switches_to_its_linear_branch",
            "tests/models/test_schnet.py::test_equivariant_with_activations_at_torchs_softplus_switch"),
           "torch's default threshold: a 2.1e-9 jump at 20 (SchNet's flaky equivariance failure)"),
    # ---- geometry and the model boundary ----
    Mutant("edges/direction-reversed", "geognn/graph/edges.py", "edge_vec = pos[sender] - pos[receiver]",
           "edge_vec = pos[receiver] - pos[sender]", ("tests/graph/test_edges.py",),
           "edge_vec must be pos[j] - pos[i] (DESIGN: one direction, tested once)"),
    Mutant("edges/offset-dropped", "geognn/graph/edges.py", "        edge_vec = edge_vec + edge_offset\n",
           "        edge_vec = edge_vec\n", ("tests/graph/test_edges.py", "tests/models/test_egnn.py")),
    Mutant("model/forces-sign", "geognn/models/base.py", "out[keys.FORCES] = -grads[0]",
           "out[keys.FORCES] = grads[0]", ("tests/models/test_egnn.py",)),
    Mutant("model/stress-without-volume", "geognn/models/base.py",
           "out[keys.STRESS] = grads[1] / volume.view(-1, 1, 1)", "out[keys.STRESS] = grads[1]",
           ("tests/models/test_egnn.py",)),
    Mutant("model/mean-readout-summed", "geognn/models/base.py",
           "out[keys.ENERGY] = scatter(node_energy, batch, dim=0, dim_size=num_graphs, reduce=reduce)",
           'out[keys.ENERGY] = scatter(node_energy, batch, dim=0, dim_size=num_graphs, reduce="sum")',
           ("tests/models/test_base.py",)),
    # ---- EGNN (Satorras et al. 2021, eqs. 3-6) ----
    Mutant("egnn/messages-from-receiver-twice", "geognn/nn/egnn.py",
           "to_sender.index_select(0, sender),", "to_sender.index_select(0, receiver),",
           ("tests/nn/test_egnn_layer.py",), "m_ij built from (h_i, h_i): the mutation run's example"),
    Mutant("egnn/coordinate-update-sign", "geognn/nn/egnn.py",
           "pos_out = pos + coord_update if coord_update is not None else pos",
           "pos_out = pos - coord_update if coord_update is not None else pos", ("tests/nn/test_egnn_layer.py",)),
    Mutant("egnn/residual-dropped", "geognn/nn/egnn.py", "h_out = h + h_update if self.residual else h_update",
           "h_out = h_update", ("tests/nn/test_egnn_layer.py",)),
    Mutant("egnn/distance-not-squared", "geognn/nn/egnn.py",
           "pre = torch.addcmul(h_i + h_j, sq_len, first.weight[:, 2 * F])",
           "pre = torch.addcmul(h_i + h_j, sq_len.sqrt(), first.weight[:, 2 * F])", ("tests/nn/test_egnn_layer.py",)),
    Mutant("egnn/normalisation-constant-dropped", "geognn/nn/egnn.py",
           "direction = -edge_vec / (sq_len.sqrt() + self.norm_constant) if self.normalize else -edge_vec",
           "direction = -edge_vec / sq_len.sqrt() if self.normalize else -edge_vec", ("tests/nn/test_egnn_layer.py",)),
    # ---- DimeNet angles ----
    Mutant("dimenet/angle-sign", "geognn/nn/dimenet.py",
           "return -(vec_kj * vec_ji).sum(-1) / (edge_len.index_select(0, idx_kj) * len_ji)",
           "return (vec_kj * vec_ji).sum(-1) / (edge_len.index_select(0, idx_kj) * len_ji)",
           ("tests/nn/test_dimenet_layers.py",), "the angle at j is between x_k - x_j and x_i - x_j"),
    # ---- units, normalisation, training ----
    Mutant("units/hartree", "geognn/data/units.py", "HARTREE_TO_EV = 27.211386245988",
           "HARTREE_TO_EV = 27.211386245988 / 1.0000001", ("tests/data/test_units.py",),
           "a wrong digit in a conversion factor"),
    Mutant("units/kcal", "geognn/data/units.py",
           "KCAL_PER_MOL_TO_EV = 4184.0 / (_AVOGADRO * _ELEMENTARY_CHARGE)",
           "KCAL_PER_MOL_TO_EV = 4186.8 / (_AVOGADRO * _ELEMENTARY_CHARGE)",
           ("tests/data/test_units.py", "tests/data/test_md17.py"),
           "the international-table calorie instead of the thermochemical one"),
    Mutant("normalization/per-atom-shift-not-divided", "geognn/training/normalization.py",
           "per_atom = energy_residuals(train, references) / sizes", "per_atom = energy_residuals(train, references)",
           ("tests/training/test_normalization.py",)),
    Mutant("normalization/intensive-std-as-shift", "geognn/training/normalization.py",
           "shift, scale = float(energies.mean()), float(energies.std()) if len(energies) > 1 else 1.0",
           "shift, scale = float(energies.median()), float(energies.std()) if len(energies) > 1 else 1.0",
           ("tests/training/test_normalization.py",)),
    Mutant("loss/per-atom-not-divided", "geognn/training/loss.py",
           'errors["energy_per_atom"] = energy / sizes', 'errors["energy_per_atom"] = energy',
           ("tests/training/test_parts.py",)),
    Mutant("ema/decay-inverted", "geognn/training/ema.py",
           "self.shadow[name].lerp_(param.detach(), 1.0 - decay)", "self.shadow[name].lerp_(param.detach(), decay)",
           ("tests/training/test_parts.py",)),
    Mutant("splits/overlap", "geognn/data/collated.py", "return list(torch.split(perm[: sum(counts)], counts))",
           "return list(torch.split(torch.cat([perm[:1], perm[: sum(counts) - 1]]), counts))",
           ("tests/data/test_ase_dataset.py", "tests/data/test_qm9.py"),
           "a structure in two splits"),
    Mutant("calculator/stress-voigt-of-first-model-only", "geognn/calculator.py",
           'results["stress"] = full_3x3_to_voigt_6_stress(stacked[keys.STRESS].mean(0)[0])',
           'results["stress"] = full_3x3_to_voigt_6_stress(stacked[keys.STRESS][0][0])',
           ("tests/test_calculator.py::test_ensemble_stress_is_its_members_mean_and_spread",),
           "an ensemble's stress must be the mean over its models"),
    # ---- the expressivity verdict ----
    Mutant("expressivity/threshold-1x-noise", "geognn/expressivity.py", "NOISE_FACTOR = 100.0", "NOISE_FACTOR = 1.0",
           ("tests/test_expressivity.py::test_separation_needs_a_gap_far_above_the_noise",),
           "the README's table could be noise"),
    Mutant("expressivity/threshold-inclusive", "geognn/expressivity.py", "return self.gap > NOISE_FACTOR",
           "return self.gap >= NOISE_FACTOR", ("tests/test_expressivity.py::test_separation_needs_a_gap_far_above_the_noise",)),
    Mutant("expressivity/no-rounding-floor", "geognn/expressivity.py", "max(self.noise, ROUNDING * self.scale)",
           "self.noise", ("tests/test_expressivity.py::test_separation_noise_is_at_least_a_few_roundings_of_the_output",)),
    Mutant("expressivity/second-structure-not-rotated", "geognn/expressivity.py", "pos=pos @ rotation.T + shift",
           "pos=(pos @ rotation.T if pos is pair.pos_a else pos) + shift",
           ("tests/test_expressivity.py::test_pair_outputs_rotates_and_translates_each_structure",),
           "structure b translated but never rotated"),
    Mutant("expressivity/first-structure-not-rotated", "geognn/expressivity.py", "pos=pos @ rotation.T + shift",
           "pos=(pos if pos is pair.pos_a else pos @ rotation.T) + shift",
           ("tests/test_expressivity.py::test_pair_outputs_rotates_and_translates_each_structure",)),
    Mutant("expressivity/not-translated", "geognn/expressivity.py", "pos=pos @ rotation.T + shift",
           "pos=pos @ rotation.T", ("tests/test_expressivity.py::test_pair_outputs_rotates_and_translates_each_structure",)),
    Mutant("expressivity/noise-of-first-structure-only", "geognn/expressivity.py",
           "noise = float((energy.max(dim=1).values - energy.min(dim=1).values).max())",
           "noise = float(energy[0].max() - energy[0].min())",
           ("tests/test_expressivity.py::test_separation_measures_the_gap_against_each_structures_spread",)),
    Mutant("expressivity/noise-of-second-structure-only", "geognn/expressivity.py",
           "noise = float((energy.max(dim=1).values - energy.min(dim=1).values).max())",
           "noise = float(energy[1].max() - energy[1].min())",
           ("tests/test_expressivity.py::test_separation_measures_the_gap_against_each_structures_spread",)),
    Mutant("expressivity/improper-rotations", "geognn/expressivity.py",
           "    if torch.linalg.det(q) < 0:\n        q[:, 0] = -q[:, 0]\n", "",
           ("tests/test_expressivity.py::test_pair_outputs_rotates_and_translates_each_structure",),
           "reflections would let a chiral pair look separated"),
    # ---- neighbour lists and dataset parsing ----
    Mutant("radius/cutoff-inclusive", "geognn/graph/radius.py", "keep[index] = length < r",
           "keep[index] = length <= r", ("tests/graph/test_radius.py", "tests/graph/test_neighbors.py"),
           "a pair exactly at the cutoff is not an edge"),
    Mutant("radius/settling-skipped", "geognn/graph/radius.py", "keep[index] = length < r", "keep[index] = True",
           ("tests/graph/test_neighbors.py",), "pairs the backend found within 1e-9 of the cutoff, kept unchecked"),
    Mutant("qm9/gap-left-in-hartree", "geognn/data/qm9_sources.py",
           '_HARTREE_TARGETS = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")',
           '_HARTREE_TARGETS = ("homo", "lumo", "zpve", "U0", "U", "H", "G")', ("tests/data/test_qm9.py",)),
    Mutant("ase/voigt-order", "geognn/data/ase_dataset.py", "xx, yy, zz, yz, xz, xy = stress",
           "xx, yy, zz, xz, yz, xy = stress", ("tests/data/test_ase_dataset.py",),
           "ASE's Voigt order is xx, yy, zz, yz, xz, xy"),
    # ---- DimeNet: what the model feeds its interactions (Gasteiger et al. 2020, eqs. 3-7) ----
    Mutant("dimenet/sbf-on-d_ji", "geognn/models/dimenet.py", "sbf = self.sbf(edge_len, cos_angle, idx_kj)",
           "sbf = self.sbf(edge_len, cos_angle, idx_ji)", ("tests/nn/test_dimenet_layers.py::test_model_feeds_its_interaction_the_basis_of_d_kj_and_the_angle_at_j",),
           "the spherical basis takes d_kj; caught before only by the PyG comparison, which needs torch-sparse"),
    Mutant("dimenet/angle-at-i", "geognn/models/dimenet.py",
           "cos_angle = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, self._vertex)",
           'cos_angle = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, "i")', ("tests/nn/test_dimenet_layers.py::test_model_feeds_its_interaction_the_basis_of_d_kj_and_the_angle_at_j",)),
    Mutant("dimenet/pattern-sends-from-ji", "geognn/models/dimenet.py",
           "pattern = triplet_pattern(idx_ji, idx_kj, edge_index.shape[1], edge_index.shape[1])",
           "pattern = triplet_pattern(idx_ji, idx_ji, edge_index.shape[1], edge_index.shape[1])",
           ("tests/nn/test_dimenet_layers.py::test_model_feeds_its_interaction_the_basis_of_d_kj_and_the_angle_at_j",),
           "the fused blocks of both models read their triplets from this one pattern"),
    Mutant("dimenet/bilinear-one-basis-column", "geognn/nn/dimenet.py",
           "spmm(sbf[:, b : b + 1], x, ones, pattern)", "spmm(sbf[:, :1], x, ones, pattern)",
           ("tests/nn/test_dimenet_layers.py::test_dimenet_interaction_is_the_papers_bilinear_step",),
           "DimeNet's fused triplet sum: slice b of the bilinear aggregate takes basis column b"),
    Mutant("triplets/kj-and-ji-swapped", "geognn/graph/triplets.py", "return idx_kj[keep], idx_ji[keep]",
           "return idx_ji[keep], idx_kj[keep]", ("tests/nn/test_dimenet_layers.py", "tests/graph/test_triplets.py")),
    # ---- the gate (NequIP: SiLU on even scalars, tanh on odd ones) ----
    Mutant("gate/odd-scalars-through-abs", "geognn/nn/gate.py", 'SCALAR_ACTIVATIONS = {1: "silu", -1: "tanh"}',
           'SCALAR_ACTIVATIONS = {1: "silu", -1: "abs"}', ("tests/nn/test_gate.py",),
           "caught before only by a 4-layer NequIP test"),
    Mutant("gate/odd-scalars-through-silu", "geognn/nn/gate.py", 'SCALAR_ACTIVATIONS = {1: "silu", -1: "tanh"}',
           'SCALAR_ACTIVATIONS = {1: "silu", -1: "silu"}', ("tests/nn/test_gate.py",)),
    Mutant("gate/odd-gates-through-abs", "geognn/nn/gate.py", 'GATE_ACTIVATIONS = {1: "silu", -1: "tanh"}',
           'GATE_ACTIVATIONS = {1: "silu", -1: "abs"}', ("tests/nn/test_gate.py",)),
    # ---- PaiNN residuals (Schütt et al. 2021, eqs. 7-10 add each block's output to s and v) ----
    Mutant("painn/message-scalar-residual", "geognn/models/painn.py",
           "h, v = h + dh, v + dv\n            dh, dv = update(h, v)", "h, v = dh, v + dv\n            dh, dv = update(h, v)",
           ("tests/models/test_painn.py::test_model_adds_each_blocks_increments_to_h_and_v",), "caught before only by one line of an expressivity test"),
    Mutant("painn/message-vector-residual", "geognn/models/painn.py",
           "h, v = h + dh, v + dv\n            dh, dv = update(h, v)", "h, v = h + dh, dv\n            dh, dv = update(h, v)",
           ("tests/models/test_painn.py::test_model_adds_each_blocks_increments_to_h_and_v",)),
    Mutant("painn/update-scalar-residual", "geognn/models/painn.py",
           "dh, dv = update(h, v)\n            h, v = h + dh, v + dv", "dh, dv = update(h, v)\n            h, v = dh, v + dv",
           ("tests/models/test_painn.py::test_model_adds_each_blocks_increments_to_h_and_v",)),
    Mutant("painn/update-vector-residual", "geognn/models/painn.py",
           "dh, dv = update(h, v)\n            h, v = h + dh, v + dv", "dh, dv = update(h, v)\n            h, v = h + dh, dv",
           ("tests/models/test_painn.py::test_model_adds_each_blocks_increments_to_h_and_v",)),
    Mutant("painn/smooth-norm-is-the-papers", "geognn/nn/painn.py",
           "norm = torch.sqrt(square + 1.0) - 1.0 if self.smooth else", "norm = torch.sqrt(square + 1e-8) if self.smooth else",
           ("tests/models/test_painn.py::TestPaiNN::test_smooth_at_symmetric_sites",), "the cusp at lattice sites"),
    # ---- mixed labels (issue 32) ----
    Mutant("labels/stress-mask-ignored", "geognn/training/loss.py",
           "errors[\"stress\"] = select(error, structure_mask(batch, keys.STRESS))", "errors[\"stress\"] = error",
           ("tests/training/test_own_data.py::test_masked_errors_equal_those_of_the_labelled_structures",)),
    Mutant("labels/force-mask-ignored", "geognn/training/loss.py",
           "select(out[keys.FORCES] - batch[keys.FORCES], atom_mask(batch, keys.FORCES))",
           "out[keys.FORCES] - batch[keys.FORCES]",
           ("tests/training/test_own_data.py::test_statistics_skip_missing_labels",)),
    Mutant("labels/element-fit-counts-missing-energies", "geognn/data/stats.py",
           "targets.append(select(batch[energy_key].detach().to(torch.float64).reshape(-1), labelled))",
           "targets.append(batch[energy_key].detach().to(torch.float64).reshape(-1))",
           ("tests/training/test_own_data.py::test_statistics_skip_missing_labels",)),
    Mutant("labels/isolated-references-ignored", "geognn/training/trainer.py",
           "references=given_references(config.data, self._source, self.train_set, model.config.max_atomic_number),",
           "references=None,", ("tests/training/test_own_data.py::test_mixed_labels_train_and_report_counts",)),
    Mutant("log/cpu-time-restarts-on-resume", "geognn/training/checkpointing.py",
           '        self.cpu_offset = state.get("cpu_s", 0.0)', "        self.cpu_offset = 0.0",
           ("tests/training/test_trainer.py::test_cpu_time_is_logged_and_carried_over_a_resume",)),
    Mutant("compare/only-ignored", "geognn/training/compare.py",
           "config = replace(config, models={label: config.models[label] for label in only})", "pass",
           ("tests/training/test_compare.py::test_only_runs_the_named_models_and_the_report_then_gathers_them",)),
    # ---- tensor-product convolution (NequIP) and the shared base ----
    Mutant("tp/self-connection-dropped", "geognn/nn/tensor_product.py", "            out = out + self.self_connection(x, node_attr)\n",
           "            out = out\n", ("tests/nn/test_tensor_product.py",)),
    Mutant("tp/envelope-dropped", "geognn/nn/tensor_product.py",
           "radial = self.bessel(edge_len) * self.envelope(edge_len).unsqueeze(-1)", "radial = self.bessel(edge_len)",
           ("tests/nn/test_tensor_product.py", "tests/models/test_nequip.py"), "not smooth at the cutoff"),
    Mutant("tp/sh-not-normalised", "geognn/nn/tensor_product.py",
           'self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")',
           'self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")',
           ("tests/nn/test_tensor_product.py",)),
    Mutant("base/neighbour-sum-not-averaged", "geognn/nn/message_passing.py",
           ".index_add_(0, index, message) / self.avg_num_neighbors", ".index_add_(0, index, message)",
           ("tests/nn/test_tensor_product.py", "tests/models/test_schnet.py", "tests/nn/test_egnn_layer.py")),
]


def _copy_repository(destination: Path) -> Path:
    anywhere = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info", "processed")
    top_level = {".git", ".venv", "data", "runs", "build", "dist"}

    def ignore(folder, names):
        skipped = set(anywhere(folder, names))
        return skipped | (top_level & set(names)) if Path(folder) == ROOT else skipped

    shutil.copytree(ROOT, destination, ignore=ignore)
    # The repository's data/ (QM9 cache) is large; tests that need it find it through a link.
    if (ROOT / "data").exists():
        (destination / "data").symlink_to(ROOT / "data")
    return destination


def _run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """'caught', 'survived' or 'error' (collection failed, timeout), the seconds taken, and the tail."""
    # No bytecode: a restored file can have the size and second of its mutant, which a .pyc would trust.
    environment = {**os.environ, "PYTHONPATH": f"{copy}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy, env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "error", time.perf_counter() - start, "timed out"
    seconds = time.perf_counter() - start
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    # pytest: 0 all passed, 1 some failed, 2 interrupted/collection error, 4 usage, 5 none collected.
    outcome = {0: "survived", 1: "caught"}.get(done.returncode, "error")
    return outcome, seconds, tail


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", nargs="*", default=[], help="run only mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.k or any(word in m.name for word in args.k)]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:45s} {mutant.path}  <- {', '.join(mutant.tests)}")
        return 0
    stale = [m.name for m in chosen if (ROOT / m.path).read_text().count(m.old) != 1]
    if stale:
        print("mutants whose original text is not found exactly once (update them):", *stale, sep="\n  ")
        return 2
    status = 0
    with tempfile.TemporaryDirectory(prefix="geognn-mutants-") as folder:
        copy = _copy_repository(Path(folder) / "repo")
        # Unmutated, every named test must pass: a failure then would count as a catch.
        tests = tuple(dict.fromkeys(test for mutant in chosen for test in mutant.tests))
        outcome, seconds, tail = _run_tests(copy, tests, args.timeout * 3)
        print(f"baseline: the {len(tests)} named tests on the unmutated copy: "
              f"{'pass' if outcome == 'survived' else 'FAIL'} ({seconds:.0f} s)", flush=True)
        if outcome != "survived":
            print("    " + tail.replace("\n", "\n    "))
            return 2
        print(f"{'mutant':45s} {'result':9s} seconds")
        counts = {"caught": 0, "survived": 0, "error": 0}
        for mutant in chosen:
            target = copy / mutant.path
            original = target.read_text()
            target.write_text(original.replace(mutant.old, mutant.new, 1))
            try:
                outcome, seconds, tail = _run_tests(copy, mutant.tests, args.timeout)
            finally:
                target.write_text(original)
            counts[outcome] += 1
            print(f"{mutant.name:45s} {outcome:9s} {seconds:7.1f}", flush=True)
            if outcome != "caught":
                status = 1
                print("    " + tail.replace("\n", "\n    "), flush=True)
        print(f"{counts['caught']} caught, {counts['survived']} survived, {counts['error']} errors "
              f"of {len(chosen)} mutants")
    return status


if __name__ == "__main__":
    sys.exit(main())
