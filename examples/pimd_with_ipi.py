"""Path-integral MD with i-PI: a geognn model, exported for metatomic, serves the beads' forces.

    python examples/pimd_with_ipi.py runs/qm9_xtb_egnn                  # 8 beads, 2 force clients, 300 K
    python examples/pimd_with_ipi.py runs/qm9_xtb_egnn --beads 1        # classical NVT
    python examples/pimd_with_ipi.py model.pt --steps 2000 --clients 4  # a file from `geognn export`
    python examples/pimd_with_ipi.py runs/qm9_xtb_egnn --client ase     # GeoGNNCalculator as the client

i-PI (``pip install ipi``) integrates the ring polymer; the forces on its beads come from
client processes that connect to it over a socket (here a Unix socket on this machine;
i-PI also listens on TCP, so clients can run on other machines). Each client is i-PI's own
Python driver with its metatomic back end (``i-pi-py_driver -m metatomic``) loading the
exported model, so the clients need metatomic-torch but not geognn. i-PI hands the beads
of each step to whichever clients are free, so two clients evaluate two beads at a time.

``--client ase`` serves the forces the other way i-PI supports: each client is ASE's socket
client (``ase.calculators.socketio.SocketClient``) around `GeoGNNCalculator`, loading the
checkpoint itself (no export; the clients need geognn). The two routes give the same energies;
the metatomic one is the route to engines other than i-PI (LAMMPS and the rest).

A checkpoint (run folder or file from `geognn train`) is exported first; a ``.pt`` file
already made by `geognn export` is used as it is. Without either, a freshly initialised
EGNN stands in: the dynamics is then not chemistry, but everything checked at the end holds
all the same (the thermostat's centroid temperature, and i-PI's potential energies equal
to geognn's at the beads' positions).

The molecule sits in a 40 Å box: i-PI always has a cell, and the model sees no image
within its cutoff, so the energies are those of the free molecule.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from ase.io import read

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "qm9_xtb_sample.extxyz"
BOX = 40.0  # Å

INPUT = """<simulation verbosity='low' safe_stride='100000'>
  <output prefix='sim'>
    <properties stride='1' filename='out' flush='1'>
      [ step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}},
        temperature(nm=0){{kelvin}}, potential{{electronvolt}} ]
    </properties>
    <trajectory filename='pos' stride='{stride}' format='ase' flush='1'> positions </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
  <ffsocket name='geognn' mode='unix' pbc='false'>
    <address>{address}</address>
    <latency>1e-4</latency>
  </ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='xyz' units='angstrom'>init.xyz</file>
      <velocities mode='thermal' units='kelvin'>{temperature}</velocities>
    </initialize>
    <forces><force forcefield='geognn'/></forces>
    <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
    <motion mode='dynamics'>
      <fixcom>True</fixcom>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>{timestep}</timestep>
        <thermostat mode='{thermostat}'><tau units='femtosecond'>{tau}</tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def stand_in():
    """The untrained EGNN used without a model: its energy scaled down to a gentle landscape
    (an initialisation's forces are large and random, and would heat the molecule in a few steps)."""
    from geognn.models import build_model

    torch.manual_seed(0)
    model = build_model("egnn", hidden_channels=32, num_layers=3).double()
    model.energy_scale.fill_(0.02)
    return model


def exported_model(source, folder: Path) -> Path:
    """The metatomic file to serve: ``source`` itself (an exported .pt), its export (a checkpoint),
    or an untrained EGNN's (None)."""
    from geognn.export import export_checkpoint, save_metatomic
    from geognn.models import load_checkpoint

    target = folder / "model.pt"
    if source is None:
        return save_metatomic(stand_in(), target)
    source = Path(source)
    if source.is_file():
        try:
            load_checkpoint(source)
        except Exception:  # not a geognn checkpoint: take it as an exported model
            shutil.copy(source, target)
            return target
    return export_checkpoint(source, target, overwrite=True)


def ase_calculator(source=None):
    """`GeoGNNCalculator` for a checkpoint (run folder or file), or for the untrained EGNN (None)."""
    from geognn.calculator import GeoGNNCalculator

    if source is None:
        return GeoGNNCalculator(stand_in())
    return GeoGNNCalculator.from_checkpoint(source, dtype=torch.float64)


def serve(address: str, source=None) -> None:
    """One ASE socket client: connect to i-PI's Unix socket ``/tmp/ipi_<address>`` and answer its
    force requests with `GeoGNNCalculator` until i-PI ends the run."""
    from ase.calculators.socketio import SocketClient

    atoms = read("init.xyz")  # the molecule i-PI moves (species and order); i-PI sends the positions
    atoms.pbc = False
    atoms.calc = ase_calculator(source)
    SocketClient(unixsocket=address).run(atoms)


def run(source=None, *, workdir="runs/examples/ipi", beads=8, clients=2, client="metatomic", steps=200,
        timestep=0.5, temperature=300.0, tau=50.0, stride=10, seed=12345, timeout=600.0) -> dict:
    """Run i-PI with ``clients`` force-client processes, each i-PI's metatomic driver on the exported
    model (``client="metatomic"``) or ASE's socket client around `GeoGNNCalculator` (``"ase"``);
    returns the properties i-PI logged, the bead positions it wrote every ``stride`` steps, and the
    model the clients served."""
    if client not in ("metatomic", "ase"):
        raise ValueError(f"client must be 'metatomic' or 'ase', not {client!r}")
    if shutil.which("i-pi") is None or shutil.which("i-pi-py_driver") is None:
        raise RuntimeError("i-PI is not installed: pip install ipi")
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    if client == "metatomic":
        model = exported_model(source, folder)
        driver = ["i-pi-py_driver", "-u", "-a", "{address}", "-m", "metatomic",
                  "-o", f"template=init.xyz,model={model.name}"]
    else:
        model = None if source is None else Path(source).resolve()
        if model is not None and model.is_file():
            from geognn.models import load_checkpoint

            try:
                load_checkpoint(model)
            except Exception as error:
                raise ValueError(f"{model} is not a geognn checkpoint; an exported model runs with "
                                 f"client='metatomic'") from error
        driver = [sys.executable, str(Path(__file__).resolve()), "--serve", "{address}"]
        driver += [] if model is None else [str(model)]
    atoms = read(SAMPLE, index=5)  # C7H10N2 at its QM9 geometry
    atoms.center()
    atoms.positions += BOX / 2 - atoms.positions.mean(axis=0)
    comment = f"# CELL(abcABC): {BOX} {BOX} {BOX} 90.0 90.0 90.0 cell{{angstrom}} positions{{angstrom}}"
    lines = [str(len(atoms)), comment] + [f"{s} {x:.10f} {y:.10f} {z:.10f}"
                                          for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    (folder / "init.xyz").write_text("\n".join(lines) + "\n")
    address = f"geognn-{uuid.uuid4().hex[:12]}"  # a Unix socket /tmp/ipi_<address>, unique per run
    (folder / "input.xml").write_text(INPUT.format(
        steps=steps, seed=seed, address=address, beads=beads, temperature=temperature, timestep=timestep,
        thermostat="pile_l" if beads > 1 else "langevin", tau=tau, stride=stride))
    for old in folder.glob("sim.*"):
        old.unlink()

    start = time.perf_counter()
    log = open(folder / "ipi.log", "w")
    server = subprocess.Popen(["i-pi", "input.xml"], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    workers = []
    try:
        socket = Path(f"/tmp/ipi_{address}")
        while not socket.exists():  # i-PI opens its socket after reading the input
            if server.poll() is not None or time.perf_counter() - start > timeout:
                raise RuntimeError(f"i-PI did not start; see {folder / 'ipi.log'}")
            time.sleep(0.1)
        driver = [part.format(address=address) for part in driver]
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per client: they run side by side
        for k in range(clients):
            workers.append(subprocess.Popen(driver, cwd=folder, stdout=open(folder / f"client{k}.log", "w"),
                                            stderr=subprocess.STDOUT, env=environment))
        while server.poll() is None:
            if any(worker.poll() not in (None, 0) for worker in workers):  # 0: i-PI told it the run is over
                raise RuntimeError(f"a force client failed before i-PI finished; see {folder}/client*.log")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"i-PI did not finish in {timeout} s; see {folder / 'ipi.log'}")
            time.sleep(0.05)
    finally:
        for process in [server, *workers]:
            if process.poll() is None:
                process.terminate()
        for process in [server, *workers]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    if server.returncode != 0:
        raise RuntimeError(f"i-PI exited with {server.returncode}; see {folder / 'ipi.log'}")
    wall = time.perf_counter() - start

    table = np.loadtxt(folder / "sim.out", ndmin=2)
    names = ["step", "time", "conserved", "temperature", "centroid_temperature", "potential"]
    properties = {name: table[:, k] for k, name in enumerate(names)}
    bead_files = sorted(folder.glob("sim.pos*"), key=lambda path: int("0" + "".join(filter(str.isdigit, path.name))))
    frames = [read(path, index=":") for path in bead_files]  # [bead][frame]
    return {"properties": properties, "beads": frames, "model": model, "wall_time": wall, "stride": stride}


def geognn_potentials(result: dict, model=None) -> np.ndarray:
    """geognn's own bead-averaged energies (eV) at the frames i-PI wrote, for comparing with its log."""
    from geognn.calculator import GeoGNNCalculator

    calculator = GeoGNNCalculator(model if model is not None else stand_in())
    energies = []
    for frames in zip(*result["beads"]):  # the beads of one step
        values = []
        for atoms in frames:
            atoms.pbc = False  # i-PI's box: no image within the cutoff
            atoms.calc = calculator
            values.append(atoms.get_potential_energy())
        energies.append(np.mean(values))
    return np.array(energies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="checkpoint, run folder or exported .pt (default: untrained EGNN)")
    parser.add_argument("--client", default="metatomic", choices=["metatomic", "ase"],
                        help="force clients: i-PI's metatomic driver on the exported model, or ASE's socket "
                             "client around GeoGNNCalculator")
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)  # run as one ASE client
    parser.add_argument("--beads", type=int, default=8, help="ring-polymer beads (1: classical NVT)")
    parser.add_argument("--clients", type=int, default=2, help="force-client processes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--workdir", default="runs/examples/ipi")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.model)
    result = run(args.model, workdir=args.workdir, beads=args.beads, clients=args.clients, client=args.client,
                 steps=args.steps, timestep=args.timestep, temperature=args.temperature)
    props = result["properties"]
    half = len(props["step"]) // 2
    print(f"i-PI: {args.steps} steps of {args.beads} bead(s), {args.clients} {args.client} clients, "
          f"{result['wall_time']:.1f} s")
    print(f"centroid temperature (second half): {props['centroid_temperature'][half:].mean():.1f} K "
          f"(target {args.temperature} K)")
    print(f"potential energy: {props['potential'][0]:.6f} eV at step 0, {props['potential'][-1]:.6f} eV at the end")
    if args.model is None:
        ours = geognn_potentials(result)
        theirs = props["potential"][:: result["stride"]][: len(ours)]
        print(f"largest |i-PI - geognn| bead-averaged energy: {np.abs(ours - theirs).max():.2e} eV")


if __name__ == "__main__":
    main()
