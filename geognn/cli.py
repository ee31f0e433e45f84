"""The ``geognn`` command: parse arguments, call library functions, print results.

    geognn train RECIPE.yaml [--run-dir DIR] [--device cuda] [--set optim.lr=1e-3 ...]
    geognn train --resume RUN_DIR
    geognn evaluate CHECKPOINT [--data FILE|RECIPE.yaml] [--split test]
    geognn plot RUN_DIR
    geognn compare RECIPE.yaml [--run-dir DIR] [--device cuda] [--set optim.max_epochs=5 ...] [--rerun-changed]
                   [--only LABEL]
    geognn expressivity [--models painn nequip:l_max=2 ...] [--pairs 2-body 4-chain ...] [--output FILE.md]
    geognn md STRUCTURE CHECKPOINT [CHECKPOINT ...] [--steps 2000 --timestep 0.5 --temperature 300 --langevin] [--overwrite]
    geognn md CELL CHECKPOINT --thermostat npt [--pressure-gpa 0 --barostat-fs 1000 --npt-cell isotropic]
    geognn relax STRUCTURE CHECKPOINT [CHECKPOINT ...] [--fmax 0.01 --optimizer fire --cell] [--overwrite]
    geognn export CHECKPOINT [-o model.pt] [--dtype float32] [--overwrite]

Every command takes ``--threads N`` (torch's CPU threads; 1 is often fastest on a shared machine).
Multi-process training: ``torchrun --nproc_per_node 2 -m geognn train RECIPE.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import yaml

from geognn._malloc import keep_freed_memory
from geognn._subnormals import flush_subnormals


def _apply_overrides(config, assignments: Sequence[str]):
    """``section.key=value`` pairs (values parsed as YAML) applied through the same checks as a recipe."""
    from geognn.training import TrainConfig, from_dict

    return from_dict(TrainConfig, _set_values(config.to_dict(), assignments))


def _set_values(mapping: dict, assignments: Sequence[str]) -> dict:
    """Set ``section.key=value`` pairs (values parsed as YAML) in a recipe mapping."""
    from geognn.training import ConfigError

    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. optim.lr=0.001")
        key, text = assignment.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = mapping
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section of the recipe")
            node = node[part]
        node[leaf] = yaml.safe_load(text)
    return mapping


def _command_overrides(args) -> list[str]:
    """``--set`` pairs plus those that ``--run-dir``, ``--device`` and ``--no-progress`` stand for."""
    overrides = list(args.set or [])
    if args.run_dir is not None:
        overrides.append(f"log.run_dir={args.run_dir}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.no_progress:
        overrides.append("log.progress=false")
    return overrides


def _train(args) -> int:
    from geognn.training import format_metrics, load_config
    from geognn.training.trainer import fit, resume_config

    if args.resume is not None:
        if args.recipe is not None:
            raise SystemExit("geognn train: give either a recipe or --resume RUN_DIR, not both")
        config = resume_config(args.resume)
    elif args.recipe is not None:
        config = load_config(args.recipe)
    else:
        raise SystemExit("geognn train: give a recipe (train/*.yaml) or --resume RUN_DIR")
    overrides = _command_overrides(args)
    config = _apply_overrides(config, overrides)
    result = fit(config, resume=args.resume is not None)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return 0
    unit = result.test_metrics.get("unit", "eV")
    if result.stopped == "interrupted":
        print(f"interrupted at step {result.step}; saved {result.last_checkpoint}. "
              f"Continue with: geognn train --resume {result.run_dir}")
        return 130
    print(f"stopped: {result.stopped} after {result.step} steps ({result.epoch} epochs); run folder {result.run_dir}")
    if result.test_metrics:
        metrics = result.test_metrics
        print(f"{metrics['split']} ({metrics['structures']} structures, best checkpoint from step {metrics['step']}): "
              f"{format_metrics(metrics, unit)}")
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from geognn.training.compare import compare, parse_compare

    path = Path(args.recipe)
    if not path.exists():
        raise FileNotFoundError(f"comparison recipe {path} does not exist")
    mapping = yaml.safe_load(path.read_text()) or {}
    overrides = _command_overrides(args)
    for section in ("log", "optim", "data", "loss"):
        mapping.setdefault(section, {})
    only = [label for value in args.only or [] for label in value.split(",") if label]
    rows, files = compare(parse_compare(_set_values(mapping, overrides)), measure=not args.no_measure,
                          rerun_changed=args.rerun_changed, only=only)
    if only:
        for row in rows:
            print(f"{row['model']} seed {row['seed']}: finished in {row['run_dir']}")
        print(f"no report with --only: run `geognn compare {args.recipe}` once every model has finished")
        return 0
    print(files[0].read_text(), end="")
    print("written:", ", ".join(str(f) for f in files))
    return 0


def _expressivity(args) -> int:
    from pathlib import Path

    from geognn import expressivity

    variants = [expressivity.parse_variant(text) for text in args.models] if args.models else None
    pairs = [expressivity.parse_pair(text) for text in args.pairs] if args.pairs else None
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    progress = None if args.no_progress else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    table = expressivity.run(variants, pairs, depths=args.depths, seeds=range(args.seeds), progress=progress)
    text = expressivity.report(table)
    print(text, end="")
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print("written:", path)
    return 0


def _simulation_setup(args, kind: str):
    from pathlib import Path

    from geognn.dynamics import check_outputs, load_calculator, read_structure

    stem = Path(args.structure).stem
    trajectory = args.trajectory or f"runs/{kind}/{stem}.traj"
    logfile = args.log or f"runs/{kind}/{stem}.log"
    # before the checkpoint loads: a refused run costs nothing and writes nothing
    check_outputs([trajectory, logfile], args.overwrite, how_to_allow="--overwrite")
    atoms = read_structure(args.structure, args.index)
    atoms.calc = load_calculator(args.checkpoints, device=args.device, dtype=args.dtype)
    atoms.get_potential_energy()  # elements the checkpoint does not know fail here, before any output
    return atoms, trajectory, logfile


def _md(args) -> int:
    from geognn.dynamics import run_md

    thermostat = args.thermostat or ("langevin" if args.langevin else "nve")
    if args.langevin and thermostat != "langevin":
        raise ValueError(f"--langevin and --thermostat {thermostat} disagree; give one of them")
    npt_options = {"pressure_GPa": args.pressure_gpa, "barostat_fs": args.barostat_fs, "npt_cell": args.npt_cell}
    npt_options = {key: value for key, value in npt_options.items() if value is not None}
    if npt_options and thermostat != "npt":  # before the checkpoint loads: they would be ignored
        raise ValueError("--pressure-gpa, --barostat-fs and --npt-cell apply to --thermostat npt only")
    atoms, trajectory, logfile = _simulation_setup(args, "md")
    summary = run_md(atoms, args.steps, args.timestep, args.temperature, thermostat, args.friction, trajectory,
                     logfile, args.interval, args.seed, progress=not args.no_progress, overwrite=args.overwrite,
                     **npt_options)
    print(f"{atoms.get_chemical_formula()}: {summary.line()}")
    print(f"written: {trajectory}, {logfile}")
    return 0


def _relax(args) -> int:
    from geognn.dynamics import run_relax

    atoms, trajectory, logfile = _simulation_setup(args, "relax")
    summary = run_relax(atoms, args.fmax, args.steps, args.optimizer, args.cell, trajectory, logfile,
                        progress=not args.no_progress, overwrite=args.overwrite)
    print(f"{atoms.get_chemical_formula()}: {summary.line()}")
    print(f"written: {trajectory}, {logfile}")
    return 0 if summary.converged else 2


def _simulation_arguments(command) -> None:
    command.add_argument("structure", help="a structure file ASE reads (xyz, extxyz, cif, POSCAR, .traj, ...)")
    command.add_argument("checkpoints", nargs="+", help="checkpoint file(s) or run folder(s); several: an ensemble")
    command.add_argument("--index", default=0, help="which frame of the file (default 0; ASE index, e.g. -1)")
    command.add_argument("--device", default="cpu")
    command.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    command.add_argument("--steps", type=int, help="number of steps")
    command.add_argument("--trajectory", help="ASE .traj output (default runs/<command>/<structure>.traj)")
    command.add_argument("--log", help="log file (default runs/<command>/<structure>.log)")
    command.add_argument("--overwrite", action="store_true",
                         help="replace an existing trajectory or log (without it the command refuses to start)")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate(args) -> int:
    from geognn.training import format_metrics
    from geognn.training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, device=args.device,
                                  batch_size=args.batch_size)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{metrics['target']} on {metrics['split']} ({metrics['structures']} structures): "
              f"{format_metrics(metrics, metrics['unit'])}")
    return 0


def _plot(args) -> int:
    from geognn.training.plots import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def _export(args) -> int:
    import torch

    from geognn.export import export_checkpoint

    dtype = {"float32": torch.float32, "float64": torch.float64, None: None}[args.dtype]
    from pathlib import Path

    output = args.output or str(Path(args.checkpoint).with_suffix("")) + "-metatomic.pt"
    path = export_checkpoint(args.checkpoint, output, dtype=dtype, overwrite=args.overwrite)
    print(f"written: {path} (metatomic; load it with metatomic-ase's MetatomicCalculator, i-PI or LAMMPS)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geognn", description="Train and evaluate equivariant GNNs for molecules.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train from a YAML recipe, or resume a run")
    train.add_argument("recipe", nargs="?", help="YAML recipe (see train/*.yaml)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    train.add_argument("--run-dir", help="override log.run_dir")
    train.add_argument("--device", help="cpu, cuda, cuda:N or auto (override the recipe)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set optim.lr=0.001 --set data.options.target=gap")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.set_defaults(handler=_train)

    comparison = commands.add_parser("compare", help="train several models under one recipe (optionally over training-set "
                                     "sizes, after an equal-budget search) and print the report")
    comparison.add_argument("recipe", help="a recipe with 'models:' (label -> options) and 'seeds:' (see train/compare_*.yaml)")
    comparison.add_argument("--run-dir", help="override log.run_dir (the folder of runs and leaderboard)")
    comparison.add_argument("--device", help="cpu, cuda, cuda:N or auto (override the recipe)")
    comparison.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a shared recipe value")
    comparison.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    comparison.add_argument("--no-measure", action="store_true", help="skip the inference speed and memory runs")
    comparison.add_argument("--only", action="append", metavar="LABEL[,LABEL]",
                            help="run only these models (one job per model, in parallel or on a cluster); "
                                 "no report: a run without --only writes it from the finished runs")
    comparison.add_argument("--rerun-changed", action="store_true",
                            help="train again the runs (and search again the studies) made under another recipe "
                                 "(their folders are kept, renamed seedS.replaced-N); without it they are refused")
    comparison.set_defaults(handler=_compare)

    express = commands.add_parser("expressivity", help="which models separate which synthetic structure pairs")
    express.add_argument("--models", nargs="+", metavar="MODEL",
                         help="names in MODELS, with options as name:key=value,key=value "
                              "(default: every model, EGNN without coordinate updates, NequIP l_max 1-3)")
    express.add_argument("--pairs", nargs="+", metavar="PAIR",
                         help="2-body, 3-body, chiral, K-chain, N-fold (default: those and 2-4-chain, 2-4-fold)")
    express.add_argument("--depths", nargs="+", type=int, default=[1, 2, 3, 4], help="message-passing steps")
    express.add_argument("--seeds", type=int, default=3, help="random weight draws per model and depth")
    express.add_argument("--output", metavar="FILE.md", help="also write the table as markdown")
    express.add_argument("--no-progress", action="store_true", help="no progress lines")
    express.set_defaults(handler=_expressivity)

    md = commands.add_parser("md", help="molecular dynamics (NVE, Langevin, or NPT with ASE's LangevinBAOAB) with a "
                             "checkpoint or an ensemble")
    _simulation_arguments(md)
    md.set_defaults(steps=2000)
    md.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    md.add_argument("--temperature", type=float, default=300.0,
                    help="K: initial velocities, and the Langevin or NPT bath")
    md.add_argument("--thermostat", choices=["nve", "langevin", "npt"],
                    help="nve (Velocity Verlet, the default), langevin (ASE's Langevin at --temperature), or npt: "
                         "constant temperature and pressure on a cell periodic in all three directions, by ASE's "
                         "LangevinBAOAB (ase.md.langevinbaoab: a Langevin bath on the atoms, a Langevin-Hoover "
                         "barostat on the cell, through the stress); the log adds volume and pressure")
    md.add_argument("--langevin", action="store_true", help="the same as --thermostat langevin")
    md.add_argument("--friction", type=float, default=0.01,
                    help="Langevin friction of langevin and npt, 1/fs (default 0.01: a 100 fs thermostat)")
    md.add_argument("--pressure-gpa", type=float,
                    help="npt: the pressure held, GPa (default 0; positive compresses, ASE's sign)")
    md.add_argument("--barostat-fs", type=float,
                    help="npt: the barostat's time constant, fs (default 1000): the cell's motion is damped on it "
                         "and oscillates with a period of about a third of it")
    md.add_argument("--npt-cell", choices=["isotropic", "full"],
                    help="npt: isotropic (default) scales the cell keeping its shape; full lets the shape change")
    md.add_argument("--interval", type=int, default=10, help="write a frame and a log line every N steps")
    md.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat")
    md.set_defaults(handler=_md)

    relax = commands.add_parser("relax", help="geometry optimisation (BFGS or FIRE) with a checkpoint or an ensemble")
    _simulation_arguments(relax)
    relax.set_defaults(steps=1000)
    relax.add_argument("--fmax", type=float, default=0.01, help="stop when the largest force is below this, eV/Å")
    relax.add_argument("--optimizer", default="bfgs", choices=["bfgs", "fire"])
    relax.add_argument("--cell", action="store_true", help="relax the cell too (periodic structures; uses the stress)")
    relax.set_defaults(handler=_relax)

    evaluate = commands.add_parser(
        "evaluate", help="MAE/RMSE of a checkpoint on a test split or a file",
        description="MAE and RMSE of energies, and of forces and stress wherever the data carries them "
                    "(stress: all 9 components of each structure's stress in eV/Å³, ASE's sign, positive under "
                    "tension; structures without a label are left out of its errors).")
    evaluate.add_argument("checkpoint", help="a .pt checkpoint or a run folder (its best.pt)")
    evaluate.add_argument("--data", help="structure file (extxyz, ASE db, ...), a recipe .yaml, or omitted: the "
                                         "checkpoint's own data and split")
    evaluate.add_argument("--split", default="test", help="train, val, test or all (default test)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON (in the target's unit)")
    evaluate.set_defaults(handler=_evaluate)

    export = commands.add_parser("export", help="a checkpoint as a metatomic model file (ASE, i-PI, LAMMPS, ...)")
    export.add_argument("checkpoint", help="a .pt checkpoint or a run folder (its best.pt)")
    export.add_argument("-o", "--output", help="the exported file (default: CHECKPOINT-metatomic.pt beside it)")
    export.add_argument("--dtype", choices=["float32", "float64"], help="default: the dtype of the saved weights")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    export.set_defaults(handler=_export)

    plot = commands.add_parser("plot", help="learning curves and parity plots of a run (PNG)")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="folder for the PNG files (default: RUN_DIR/plots)")
    plot.set_defaults(handler=_plot)
    for command in commands.choices.values():
        command.add_argument("--threads", type=_positive_int, metavar="N",
                             help="CPU threads for torch (default: torch's, one per core); 1 is often fastest "
                                  "for small molecules and on a machine shared with other jobs")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    from geognn.data import DatasetFormatError
    from geognn.training import ConfigError, TrainingDiverged

    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    keep_freed_memory()  # glibc: no page faults on every step's buffers (geognn/_malloc.py; GEOGNN_MALLOC=0 opts out)
    flush_subnormals()  # no microcode-slow subnormal floats (geognn/_subnormals.py; GEOGNN_FLUSH_SUBNORMALS=0 opts out)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError, FileExistsError, TrainingDiverged, DatasetFormatError, ValueError,
            ImportError) as err:
        print(f"geognn {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
