"""geognn.export: every 3D model as a metatomic model, checked by clients geognn did not write.

metatomic-ase's calculator (with metatomic's own consistency checks) runs the exported models
and is compared with `GeoGNNCalculator`; a saved file is loaded in a process where geognn,
torch_geometric and e3nn cannot be imported; the declared interaction range is checked on a
chain of atoms; `geognn export` is run on a checkpoint.
"""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms

# geognn.export first: it imports metatensor safely after torch_geometric (see its _import_metatomic).
pytest.importorskip("geognn.export", reason="geognn.export needs metatomic-torch (the 'export' extra)")
metatomic_ase = pytest.importorskip("metatomic_ase", reason="the tests run exported models with metatomic-ase")

from geognn.calculator import GeoGNNCalculator  # noqa: E402
from geognn.cli import main  # noqa: E402
from geognn.data import atoms_to_data  # noqa: E402
from geognn.export import save_metatomic, to_metatomic  # noqa: E402
from geognn.models import MODELS, build_model, save_checkpoint  # noqa: E402
from geognn.testing import molecules, periodic_structures  # noqa: E402
from metatensor.torch import Labels  # noqa: E402
from metatomic.torch import ModelOutput, load_atomistic_model  # noqa: E402

ELEMENTS = [1, 6, 7, 8, 9, 11, 14, 17, 29]  # those of geognn.testing's molecules and cells
SMALL = {  # small models, so that the whole file runs in seconds per model
    "egnn": {"hidden_channels": 16, "num_layers": 2, "vector_channels": 4},
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2},
    "painn": {"hidden_channels": 16, "num_layers": 2},
    "dimenet": {"hidden_channels": 16, "num_blocks": 2, "num_bilinear": 4},
    "dimenet++": {"hidden_channels": 16, "num_blocks": 2, "int_emb_size": 8, "basis_emb_size": 4,
                  "out_emb_channels": 16},
    "nequip": {"num_features": 8, "num_layers": 2},
    "mace": {"hidden_irreps": "8x0e + 8x1o", "num_interactions": 2, "max_ell": 2, "atomic_numbers": ELEMENTS},
}
EXPORTABLE = [name for name, cls in MODELS.items() if cls.uses_positions and cls.size_extensive]


def test_every_3d_model_is_covered():
    assert sorted(EXPORTABLE) == sorted(SMALL)


def _model(name: str, cutoff: float = 4.0):
    """A small model with non-trivial output scale, shift and element references (the export applies them),
    its weights moved off their initialisation (DimeNet's output layers start at zero)."""
    torch.manual_seed(0)
    model = build_model(name, cutoff=cutoff, **SMALL[name]).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.energy_scale.fill_(0.8)
        model.energy_shift.fill_(-0.3)
        model.atomic_reference[ELEMENTS] = torch.linspace(-5.0, -1.0, len(ELEMENTS), dtype=torch.float64)
    return model.eval()


def _structures():
    return molecules()[:3] + periodic_structures()  # the cells: triclinic Si and NaCl, a Cu slab (pbc T T F)


def _results(atoms: Atoms, calculator, stress: bool) -> dict:
    atoms = atoms.copy()
    atoms.calc = calculator
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces()}
    if stress:
        out["stress"] = atoms.get_stress()
    return out


def _assert_same(ours: dict, theirs: dict, rtol: float, label: str) -> None:
    for key, value in ours.items():
        scale = max(1.0, float(np.abs(value).max()))
        error = float(np.abs(np.asarray(theirs[key]) - value).max()) / scale
        assert error < rtol, f"{label} {key}: relative difference {error:.2e}"


@pytest.mark.parametrize("name", EXPORTABLE)
def test_exported_model_equals_the_geognn_calculator(name):
    """Energies, per-atom energies, forces and stress from metatomic-ase (its consistency checks on)
    equal geognn's on molecules and periodic cells, float64 to 1e-10."""
    model = _model(name)
    exported = metatomic_ase.MetatomicCalculator(to_metatomic(model), check_consistency=True)
    ours = GeoGNNCalculator(model)
    for atoms in _structures():
        periodic = bool(atoms.pbc.any())
        _assert_same(_results(atoms, ours, periodic), _results(atoms, exported, periodic), 1e-10,
                     f"{name} {atoms.get_chemical_formula()}")


@pytest.mark.parametrize("name", EXPORTABLE)
def test_float32_export_agrees_with_float64(name):
    model = _model(name)
    exported = to_metatomic(_model(name).float())
    assert exported.capabilities().dtype == "float32"
    calculator = metatomic_ase.MetatomicCalculator(exported, check_consistency=True)
    for atoms in _structures()[::2]:
        periodic = bool(atoms.pbc.any())
        _assert_same(_results(atoms, GeoGNNCalculator(model), periodic), _results(atoms, calculator, periodic),
                     1e-4, f"{name} float32 {atoms.get_chemical_formula()}")


def test_saved_files_load_without_geognn(tmp_path):
    """The files hold everything: a process that cannot import geognn, torch_geometric or e3nn
    loads each one with metatomic-ase and gets geognn's energies and forces."""
    atoms = _structures()[4]  # NaCl, periodic
    expected = {}
    for name in EXPORTABLE:
        model = _model(name)
        save_metatomic(model, tmp_path / f"{name}.pt")
        expected[name] = _results(atoms, GeoGNNCalculator(model), stress=True)
    atoms.write(tmp_path / "structure.traj")
    script = f"""
import json, sys
for blocked in ("geognn", "torch_geometric", "e3nn"):
    sys.modules[blocked] = None  # importing any of them now fails
from ase.io import read
from metatomic_ase import MetatomicCalculator
atoms = read({str(tmp_path / "structure.traj")!r})
out = {{}}
for name in {EXPORTABLE!r}:
    atoms.calc = MetatomicCalculator({str(tmp_path)!r} + "/" + name + ".pt")
    out[name] = {{"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist(),
                 "stress": atoms.get_stress().tolist()}}
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "extension" not in run.stderr, run.stderr[-2000:]  # no library recorded that is not needed
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    for name in EXPORTABLE:
        want = expected[name]
        _assert_same({k: want[k] for k in ("energy", "forces", "stress")}, loaded[name], 1e-10, f"{name} loaded")


def _chain(count: int, spacing: float) -> Atoms:
    """Carbon atoms on a line ``spacing`` apart, slightly zig-zagged so that angles are not all 180°."""
    positions = [[k * spacing, 0.15 * (k % 2), 0.0] for k in range(count)]
    return Atoms("C" * count, positions=positions)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_interaction_range_is_what_an_atom_sees(name):
    """On a chain with neighbours 0.6 cutoff apart (second neighbours beyond the cutoff), atom 0's
    energy moves when the atom `interaction_range / cutoff` hops away moves, and not one hop further:
    the declared range is both needed and enough for domain decomposition."""
    cutoff = 4.0
    model = _model(name, cutoff=cutoff)
    exported = to_metatomic(model)
    declared = exported.capabilities().interaction_range
    assert declared == pytest.approx(model.interaction_range())
    hops = round(declared / cutoff)
    assert hops * cutoff == pytest.approx(declared)

    def atom0_energy(moved: int) -> float:
        atoms = _chain(hops + 3, 0.6 * cutoff)
        atoms.positions[moved] += [0.0, 0.0, 0.3]
        return float(model(atoms_to_data(atoms, dtype=torch.float64))["node_energy"][0])

    reference = atom0_energy(hops + 2)  # moving the last atom, beyond every range
    assert abs(atom0_energy(hops) - reference) > 1e-10, f"{name}: atom 0 does not see {hops} hops away"
    assert atom0_energy(hops + 1) == pytest.approx(reference, abs=1e-13), f"{name} sees beyond {declared} Å"


@pytest.mark.parametrize("name", ["schnet", "mace"])
def test_selected_atoms_give_those_atoms_energies(name):
    """What a domain-decomposed engine asks: per-atom energies of a subset of the atoms."""
    model = _model(name)
    atoms = _structures()[5]  # the Cu slab
    expected = model(atoms_to_data(atoms, dtype=torch.float64))["node_energy"].detach()
    chosen = torch.tensor([[0, 1], [0, 3], [0, 6]], dtype=torch.int32)
    calculator = metatomic_ase.MetatomicCalculator(to_metatomic(model), check_consistency=True)
    for kind in ("atom", "system"):
        out = calculator.run_model(atoms, {"energy": ModelOutput(unit="eV", sample_kind=kind)},
                                   selected_atoms=Labels(["system", "atom"], chosen))
        values = out["energy"].block().values.squeeze(-1)
        if kind == "atom":
            assert out["energy"].block().samples.values[:, 1].tolist() == [1, 3, 6]
            assert torch.allclose(values, expected[[1, 3, 6]], rtol=0, atol=1e-12)
        else:
            assert float(values[0]) == pytest.approx(float(expected[[1, 3, 6]].sum()), abs=1e-12)


def test_several_systems_in_one_call():
    """Engines may pass several systems at once: per-atom energies are numbered within each system
    and equal each structure's own."""
    model = _model("schnet")
    structures = _structures()[:2]
    calculator = metatomic_ase.MetatomicCalculator(to_metatomic(model), check_consistency=True)
    block = calculator.run_model(structures, {"energy": ModelOutput(unit="eV", sample_kind="atom")})["energy"].block()
    expected = torch.cat([model(atoms_to_data(atoms, dtype=torch.float64))["node_energy"].detach()
                          for atoms in structures])
    numbering = [[k, i] for k, atoms in enumerate(structures) for i in range(len(atoms))]
    assert block.samples.values.tolist() == numbering
    assert torch.allclose(block.values.squeeze(-1), expected, rtol=0, atol=1e-12)


def test_models_that_cannot_be_exported_are_refused():
    with pytest.raises(ValueError, match="bond graph"):
        to_metatomic(build_model("gcn"))
    with pytest.raises(ValueError, match="max_num_neighbors"):
        to_metatomic(build_model("schnet", max_num_neighbors=8))
    with pytest.raises(TypeError, match="EnergyModel"):
        to_metatomic(torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="float32 or float64"):
        to_metatomic(build_model("schnet").to(torch.float16))


def _checkpoint(path, name="schnet", target="energy", elements=(1, 6, 7, 8)):
    model = _model(name)
    config = {field: getattr(model.config, field) for field in model.config.__dataclass_fields__}
    save_checkpoint({"format_version": 1, "model_name": name, "model_config": config,
                     "state_dict": model.state_dict(),
                     "normalization": {"target": target, "unit": "eV", "elements": list(elements),
                                       "potential_energy": target == "energy"},
                     "train_config": None, "metrics": {}}, path)
    return path


def test_geognn_export_command(tmp_path, capsys):
    """`geognn export CHECKPOINT -o FILE`: the file runs in metatomic-ase with the checkpoint's
    energies and elements; an existing file is kept unless --overwrite; --dtype float32."""
    checkpoint = _checkpoint(tmp_path / "best.pt")
    output = tmp_path / "model.pt"
    assert main(["export", str(checkpoint), "-o", str(output)]) == 0
    assert "written" in capsys.readouterr().out
    calculator = metatomic_ase.MetatomicCalculator(str(output))
    assert load_atomistic_model(str(output)).capabilities().atomic_types == [1, 6, 7, 8]
    atoms = molecules()[0]  # CH3CHO
    _assert_same(_results(atoms, GeoGNNCalculator.from_checkpoint(checkpoint), False),
                 _results(atoms, calculator, False), 1e-10, "export command")

    assert main(["export", str(checkpoint), "-o", str(output)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "-o", str(output), "--overwrite", "--dtype", "float32"]) == 0
    assert load_atomistic_model(str(output)).capabilities().dtype == "float32"

    assert main(["export", str(checkpoint)]) == 0  # default: beside the checkpoint
    assert (tmp_path / "best-metatomic.pt").exists()


def test_export_refuses_checkpoints_that_are_not_potentials(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "gap.pt", target="gap")
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "gap-model.pt")]) == 1
    assert "not a potential energy" in capsys.readouterr().err
    assert not (tmp_path / "gap-model.pt").exists()


# ------------------------------------------------------------------ i-PI


@pytest.fixture(scope="module")
def ipi_example():
    import runpy
    from pathlib import Path
    import shutil

    if shutil.which("i-pi") is None or shutil.which("i-pi-py_driver") is None:
        pytest.skip("i-PI is not installed (pip install ipi; the 'ipi' extra)")
    path = Path(__file__).parents[1] / "examples" / "pimd_with_ipi.py"
    return runpy.run_path(str(path), run_name="ipi_example")


@pytest.mark.parametrize("beads, clients", [(8, 2), (1, 1)], ids=["pimd-8-beads", "classical-nvt"])
def test_ipi_runs_geognn_through_metatomic(ipi_example, tmp_path, beads, clients):
    """i-PI on localhost, forces from i-PI's own metatomic driver processes loading the exported
    model: the run completes, the (centroid) temperature follows the thermostat, and the potential
    energies i-PI logs equal geognn's at the positions it wrote (to i-PI's and ASE's differing
    Å/Bohr and eV/Hartree constants, ~1e-8 relative)."""
    steps, temperature = 100, 300.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ipi_example["run"](workdir=tmp_path, beads=beads, clients=clients, steps=steps,
                                    temperature=temperature, tau=10.0, stride=20, timeout=120.0)
    properties = result["properties"]
    assert properties["step"][-1] == steps
    # A thermostat with a 10 fs time constant over 50 fs: the mean over the second half is within a
    # third of the target (19 atoms: the instantaneous value fluctuates by about 20%).
    centroid = properties["centroid_temperature"][steps // 2:].mean()
    assert abs(centroid - temperature) < temperature / 3, centroid
    ours = ipi_example["geognn_potentials"](result)
    theirs = properties["potential"][:: result["stride"]][: len(ours)]
    assert len(ours) == steps // result["stride"] + 1
    assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-6), np.abs(ours - theirs).max()


def test_ipi_runs_geognn_through_ase_socket_clients(ipi_example, tmp_path):
    """The other route: two ASE socket clients around GeoGNNCalculator serve 4 beads; i-PI's
    energies equal geognn's, and i-PI accepted both clients."""
    steps = 40
    result = ipi_example["run"](workdir=tmp_path, beads=4, clients=2, client="ase", steps=steps, tau=10.0,
                                stride=20, timeout=120.0)
    properties = result["properties"]
    assert properties["step"][-1] == steps
    ours = ipi_example["geognn_potentials"](result)
    theirs = properties["potential"][:: result["stride"]][: len(ours)]
    assert len(ours) == steps // result["stride"] + 1
    assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-6), np.abs(ours - theirs).max()
    assert (tmp_path / "ipi.log").read_text().count("Handshaking was successful") == 2
    with pytest.raises(ValueError, match="client must be"):
        ipi_example["run"](workdir=tmp_path, client="lammps")
