"""The training loop: `fit(config)` from a `TrainConfig` or a YAML recipe.

A run folder (``log.run_dir``) receives ``config.yaml`` (the recipe as run),
``run.json`` (sizes, target, device), ``log.csv``, ``last.pt`` (every
``checkpoint_every`` steps, at each epoch's end and on exit), ``best.pt``
(lowest validation loss, EMA weights), and at the end ``test_metrics.json``
and ``predictions_test.pt`` for parity plots.

Determinism: the data order of each epoch is a function of (seed, epoch) and
``last.pt`` records the position within the epoch, so ``fit(config,
resume=True)`` continues with the very batches, optimizer, schedule and EMA
state an uninterrupted run would have had. Ctrl-C (SIGINT) or SIGTERM asks
the loop to stop after the current step, write ``last.pt`` and return.

Data parallel: launched by ``torchrun --nproc_per_node P``, each process
trains on its share of each global batch of P × ``batch_size`` structures
and losses are normalised by global counts, so the run follows the same
trajectory as one process with the P-fold batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from ase.data import chemical_symbols
import yaml
from torch_geometric.loader import DataLoader

from geognn._checks import FLOAT_DTYPES, resolve_device
from geognn._subnormals import flush_subnormals
from geognn.data.stats import avg_num_neighbors
from geognn.models import MODELS, build_model
from geognn.models.checkpoint import load_checkpoint, save_checkpoint, saved_model_config
from geognn.training.checkpointing import CheckpointMixin
from geognn.training.config import ConfigError, TrainConfig, load_config
from geognn.training.data import (EpochBatches, check_labels, given_references, load_splits, shard,
                                  unseen_elements)
from geognn.training.evaluate import combined_loss, evaluate_model
from geognn.training.ema import ExponentialMovingAverage
from geognn.training.loss import ErrorStats, Loss, format_metrics, prediction_errors
from geognn.training.normalization import Normalization, compute_normalization
from geognn.training.runlog import RunLog
from geognn.training.schedule import LRSchedule



class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    """What `fit` returns. ``stopped``: finished, early_stopping, time_limit, interrupted, or the
    reason a callback gave `Trainer.request_stop` (``pruned`` for a hopeless search trial)."""

    run_dir: Path
    step: int
    epoch: int
    stopped: str
    best_checkpoint: Path
    last_checkpoint: Path
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    try:
        device = resolve_device(name)
    except ValueError as err:
        raise ConfigError(f"device: {err}") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


class _Distributed:
    """World size and rank; initialises the process group when launched by torchrun."""

    def __init__(self, device_name: str):
        self.owned = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            use_nccl = device_name != "cpu" and torch.cuda.is_available()
            dist.init_process_group("nccl" if use_nccl else "gloo")
            self.owned = True
        self.active = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if self.active else 1
        self.rank = dist.get_rank() if self.active else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank if self.active else 0))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


def check_model_and_loss(config: TrainConfig) -> None:
    """Refuse, before any data is loaded, a loss the model cannot give (forces of a 2D model)."""
    cls = MODELS.get(config.model.name)
    if cls is None or cls.uses_positions:
        return
    for weight in ("forces_weight", "stress_weight"):
        if getattr(config.loss, weight) > 0:
            raise ConfigError(
                f"loss.{weight}: model {config.model.name!r} does not use positions beyond its "
                f"{cls.graph_builder!r} graph, so it has no forces or stress; set loss.{weight}: 0"
            )


class Trainer(CheckpointMixin):
    """One training run; see the module doc. Most users call `fit`."""

    def __init__(self, config: TrainConfig, resume: bool = False,
                 callbacks: Sequence[Callable[["Trainer"], None]] = ()):
        self.config = config
        self.callbacks = list(callbacks)
        self.dist = _Distributed(config.device)
        self.device = _resolve_device(config.device, self.dist.local_rank)
        self.dtype = FLOAT_DTYPES[config.dtype]
        self.run_dir = Path(config.log.run_dir)
        self.last_path, self.best_path = self.run_dir / "last.pt", self.run_dir / "best.pt"
        self.is_main = self.dist.rank == 0
        self.stop_requested = False
        self.stop_reason: Optional[str] = None  # set by a callback through request_stop
        self._check_run_dir(resume)
        flush_subnormals()  # SchNet's radial basis underflows: subnormals are microcode-slow on x86

        torch.manual_seed(config.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = config.use_tf32
            torch.backends.cudnn.allow_tf32 = config.use_tf32
        check_model_and_loss(config)
        dataset, (self.train_set, self.val_set, self.test_set), self.target = load_splits(config.data, self.dtype)
        self.label_counts = check_labels(self.train_set, config.data, config.loss)
        self._source = dataset  # holds the isolated-atom energies of data.atom_reference: isolated
        for split, missing in unseen_elements([self.train_set, self.val_set, self.test_set]).items():
            if self.is_main:
                warnings.warn(f"the {split} split holds element(s) {', '.join(chemical_symbols[z] for z in missing)} "
                              "that no training structure has: the model cannot learn their energies, so its errors "
                              "on those structures will be large (train on more structures, or split so that "
                              "training sees every element)", stacklevel=2)
        self.loss = Loss(config.loss)
        previous = load_checkpoint(self.last_path, map_location="cpu") if resume else None
        self.model, self.normalization = self._build_model(previous)
        self.model.to(device=self.device, dtype=self.dtype)
        self.train_model = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP's search for parameters that get no gradient costs a graph traversal per step; do it only
            # for models that have some (EGNN's last coordinate update does not reach the energy).
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self._has_unused_parameters())
        if config.compile:
            self.model.atomic_energies = torch.compile(self.model.atomic_energies, dynamic=True)

        optim = config.optim
        optimizer_class = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(self.model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        self.steps_per_epoch = len(self._batches(epoch=0, start=0))
        if self.steps_per_epoch == 0:
            raise ConfigError("data: the training split is smaller than the number of processes; nothing to train on")
        total = optim.max_epochs * self.steps_per_epoch
        self.total_steps = min(total, optim.max_steps) if optim.max_steps is not None else total
        self.schedule = LRSchedule(self.optimizer, optim, self.total_steps)
        self.ema = ExponentialMovingAverage(self.model, optim.ema_decay) if optim.ema_decay else None

        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_val = math.inf
        self.evals_since_best = 0
        self.last_eval_step = -1
        self.val_metrics: dict = {}
        self.wall_offset = self.cpu_offset = 0.0
        if previous is not None:
            self._restore(previous)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            self._write_run_info()
        self.log = RunLog(self.run_dir, config.log.tensorboard, self.step if resume else None) if self.is_main else None

    # ------------------------------------------------------------ set-up

    def _check_run_dir(self, resume: bool) -> None:
        if resume and not self.last_path.exists():
            raise FileNotFoundError(f"cannot resume: {self.last_path} does not exist (was the run started in {self.run_dir}?)")
        if not resume and self.last_path.exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({self.last_path.name}); resume it with "
                f"`geognn train --resume {self.run_dir}`, or set log.run_dir to a new folder"
            )

    def _build_model(self, previous: Optional[dict]):
        config = self.config
        if previous is not None:
            normalization = Normalization.from_dict(previous["normalization"])
            model = MODELS[previous["model_name"]].from_config(saved_model_config(previous))
            return model.to(self.dtype), normalization
        name = config.model.name
        if name not in MODELS:
            raise ConfigError(f"model.name must be one of {', '.join(MODELS)}; got {name!r}")
        options = dict(config.model.options)
        fields = MODELS[name].Config.__dataclass_fields__
        if "readout" not in options:
            options["readout"] = "mean" if self.target.intensive else "sum"
        if options.get("avg_num_neighbors") == "auto":  # as in NequIP recipes: measured on the training split
            if "avg_num_neighbors" not in fields:
                raise ConfigError(f"model.options.avg_num_neighbors: model {name!r} has no such option")
            cutoff = options.get("cutoff", fields["cutoff"].default)
            sample = self.train_set[: min(len(self.train_set), 2000)]
            options["avg_num_neighbors"] = round(avg_num_neighbors(sample, cutoff), 4)
        try:
            model = build_model(name, **options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.options: {err}") from None
        normalization = compute_normalization(
            self.train_set, self.target, model.config.max_atomic_number,
            fit_references=config.data.atom_reference == "fit", use_forces=self.loss.wants_forces,
            references=given_references(config.data, self._source, self.train_set, model.config.max_atomic_number),
        )
        model = model.to(self.dtype)
        normalization.apply(model)
        return model, normalization

    def _batches(self, epoch: int, start: int) -> EpochBatches:
        return EpochBatches(len(self.train_set), self.config.data.batch_size, self.config.seed, epoch, start,
                            world_size=self.dist.world_size, rank=self.dist.rank)

    def _loader(self, dataset, batch_sampler=None, batch_size=None) -> DataLoader:
        pin = self.device.type == "cuda"
        workers = self.config.data.num_workers
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin)

    def _write_run_info(self) -> None:
        info = {
            "target": self.target.name, "unit": self.target.unit, "intensive": self.target.intensive,
            "train": len(self.train_set), "val": len(self.val_set), "test": len(self.test_set),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device), "world_size": self.dist.world_size,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "torch": torch.__version__,
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2))

    # ------------------------------------------------------------ steps

    def _wall(self) -> float:
        return self.wall_offset + (time.perf_counter() - self._started if hasattr(self, "_started") else 0.0)

    def _cpu(self) -> float:
        """CPU time of this process (all its threads) since training started, resumes included: the
        budget that a busy machine does not change, unlike the wall time."""
        return self.cpu_offset + (time.process_time() - self._cpu_started if hasattr(self, "_cpu_started") else 0.0)

    def _forward(self, model, batch):
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)
        with autocast:
            return model(batch, compute_forces=self.loss.wants_forces, compute_stress=self.loss.stress_of(batch))

    def _global_counts(self, sums: dict) -> dict:
        if self.dist.world_size == 1:
            return None
        counts = torch.tensor([float(count) for _, count in sums.values()], dtype=torch.float64, device=self.device)
        self.dist.sum(counts)
        return dict(zip(sums, counts.tolist()))

    def _has_unused_parameters(self) -> bool:
        """Whether some trainable parameter gets no gradient from the loss (probed on two training structures)."""
        batch = next(iter(self._loader(self.train_set, batch_size=min(2, len(self.train_set))))).to(self.device)
        self.model.train()  # forces with create_graph, as in a step
        out = self._forward(self.model, batch)
        loss = self.loss.combine(self.loss.sums(prediction_errors(out, batch, self.loss.wants_forces,
                                                                  self.loss.wants_stress)))
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return any(g is None for g in grads)

    def train_step(self, batch) -> tuple[float, float, dict]:
        """One optimizer step; returns (learning rate, global loss, this process's errors)."""
        self.model.train()
        lr = self.schedule.set_step(self.step)
        batch = batch.to(self.device, non_blocking=True)
        out = self._forward(self.train_model, batch)
        errors = prediction_errors(out, batch, self.loss.wants_forces, self.loss.wants_stress)
        sums = self.loss.sums(errors)
        local = self.loss.combine(sums, self._global_counts(sums))
        total = self.dist.sum(local.detach().clone())
        if not bool(torch.isfinite(total)):
            terms = ", ".join(f"{name} {float(value.detach()):.4g}" for name, (value, _) in sums.items())
            raise TrainingDiverged(
                f"the loss became {float(total)} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch}; "
                f"term sums on this process: {terms}). {self._kept_message()} Lower optim.lr, set optim.grad_clip, "
                "or check the batch's labels for NaN/inf."
            )
        self.optimizer.zero_grad(set_to_none=True)
        (local * self.dist.world_size).backward()
        clip = self.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip is not None else math.inf)
        if not bool(torch.isfinite(grad_norm)):
            raise TrainingDiverged(
                f"the gradient norm became {float(grad_norm)} at step {self.step} with a finite loss "
                f"{float(total):.4g}. {self._kept_message()} Lower optim.lr or set optim.grad_clip."
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.batch_in_epoch += 1
        return lr, float(total), errors

    def _kept_message(self) -> str:
        if self.last_path.exists():
            return f"Nothing was saved from this step; the last good checkpoint is {self.last_path}."
        return "No checkpoint had been written yet."

    def evaluate(self, dataset, keep_predictions: bool = False, sharded: bool = True) -> tuple[dict, Optional[dict]]:
        """Loss and MAE/RMSE on ``dataset`` with the prediction (EMA) weights; optionally the predictions."""
        indices = shard(len(dataset), self.dist.world_size, self.dist.rank) if sharded else torch.arange(len(dataset))
        batch_size = self.config.data.eval_batch_size or 2 * self.config.data.batch_size
        loader = self._loader(dataset.index_select(indices), batch_size=batch_size)
        swap = self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()
        with swap:
            result = evaluate_model(self.model, loader, self.device, self.loss, self._forward, keep_predictions)
        stats, loss_totals = result.stats, result.loss_totals
        if sharded:
            stats.all_reduce()
            packed = self.dist.sum(torch.tensor(list(loss_totals.values()), dtype=torch.float64, device=self.device))
            loss_totals = dict(zip(loss_totals, packed.tolist()))
        return {"loss": combined_loss(self.loss, loss_totals), **stats.result()}, result.predictions

    def validate(self) -> dict:
        metrics, _ = self.evaluate(self.val_set)
        self.val_metrics = metrics
        self.last_eval_step = self.step
        self.schedule.observe(metrics["loss"])
        # An improvement must exceed 1e-4 relative (as in ReduceLROnPlateau), so noise does not reset patience.
        improved = metrics["loss"] < self.best_val * (1 - 1e-4) if self.best_val > 0 else metrics["loss"] < self.best_val
        if improved:
            self.best_val, self.evals_since_best = metrics["loss"], 0
        else:
            self.evals_since_best += 1
        if self.is_main:
            self.log.write(self.step, self.epoch, "val", self.schedule.lr_at(max(self.step - 1, 0)),
                           metrics["loss"], metrics, self._wall(), self._cpu())
            if improved:
                save_checkpoint(self._checkpoint(with_training_state=False), self.best_path)
        return metrics

    # ------------------------------------------------------------ loop

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def request_stop(signum, frame):
            if self.stop_requested:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    def summary(self) -> str:
        """What this run is about to do, printed before the first step."""
        config = self.config
        parameters = sum(p.numel() for p in self.model.parameters())
        split = " by molecule" if config.data.split_by == "molecule" else ""
        budget = f"{self.total_steps:,} steps of batch {config.data.batch_size}"
        if config.optim.max_minutes is not None:
            budget += f", at most {config.optim.max_minutes:g} min of training"
            if self.wall_offset:
                budget += f" ({self.wall_offset / 60:.1f} used before this resume)"
        start = f", resuming at step {self.step:,}" if self.step else ""
        device = f"{self.device} ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else str(self.device)
        labels = ""
        if any(count < len(self.train_set) for count in self.label_counts.values()):
            labels = " (" + ", ".join(f"{count:,} with {label}" for label, count in self.label_counts.items()) + ")"
        return (f"{config.model.name}: {parameters:,} parameters, {config.dtype} on {device}; "
                f"{config.data.dataset}: train {len(self.train_set):,}{labels} / val {len(self.val_set):,} / "
                f"test {len(self.test_set):,} structures{split}, target {self.target.name} ({self.target.unit}); "
                f"{budget}{start}; run folder {self.run_dir}")

    def request_stop(self, reason: str) -> None:
        """For callbacks: end the run after this step, as ``stopped=reason`` (validated, ``last.pt``
        written, then tested unless `fit` was told not to)."""
        self.stop_reason = reason

    def _should_stop(self) -> Optional[str]:
        optim = self.config.optim
        flag = torch.tensor([float(self.stop_requested)], device=self.device)
        if float(self.dist.sum(flag)) > 0:
            return "interrupted"
        if self.step >= self.total_steps:
            return "finished"
        if optim.early_stopping_patience is not None and self.evals_since_best >= optim.early_stopping_patience:
            return "early_stopping"
        if optim.max_minutes is not None and self._wall() >= 60 * optim.max_minutes:
            return "time_limit"
        return None

    def run(self, test: bool = True) -> FitResult:
        config = self.config
        self._started, self._cpu_started = time.perf_counter(), time.process_time()
        previous_handlers = self._install_signal_handlers()
        # The summary and the validation lines are always printed (a long run is never silent);
        # log.progress: false only drops the bar, or its one-line-per-log_every stand-in.
        bar, plain_progress = None, False
        if self.is_main:
            print(self.summary(), file=sys.stderr, flush=True)
        if self.is_main and config.log.progress:
            if sys.stderr.isatty():
                from tqdm.auto import tqdm

                bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True)
            else:  # a log file (nohup, CI): one line per log_every steps instead of carriage returns
                plain_progress = True
        stopped = self._should_stop()
        train_stats, interval_loss, interval_steps = ErrorStats(), 0.0, 0
        try:
            while stopped is None:
                batches = self._batches(self.epoch, self.batch_in_epoch)
                epoch_length = self.batch_in_epoch + len(batches)
                for batch in self._loader(self.train_set, batch_sampler=batches):
                    lr, loss, errors = self.train_step(batch)
                    train_stats.update(errors)
                    interval_loss, interval_steps = interval_loss + loss, interval_steps + 1
                    end_of_epoch = self.batch_in_epoch == epoch_length
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4g}", lr=f"{lr:.2g}", refresh=False)
                    elif plain_progress and self.step % config.log.log_every == 0:
                        print(f"step {self.step}/{self.total_steps} epoch {self.epoch} loss {loss:.4g} lr {lr:.2g} "
                              f"{self._wall():.0f} s", file=sys.stderr, flush=True)
                    if self.step % config.log.log_every == 0 or end_of_epoch:
                        train_stats.all_reduce()
                        if self.is_main:
                            self.log.write(self.step, self.epoch, "train", lr, interval_loss / interval_steps,
                                           train_stats.result(), self._wall(), self._cpu())
                        train_stats, interval_loss, interval_steps = ErrorStats(), 0.0, 0
                    every = config.log.eval_every
                    if (every is not None and self.step % every == 0) or (every is None and end_of_epoch):
                        metrics = self.validate()
                        line = (f"step {self.step} epoch {self.epoch}: val loss {metrics['loss']:.4g}, "
                                f"{format_metrics(metrics, self.target.unit, self.target.name, self.target.intensive)}")
                        if bar is not None:
                            bar.write(line)
                        elif self.is_main:
                            print(line, file=sys.stderr, flush=True)
                    if end_of_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    stopped = self._should_stop()
                    if self.step % config.log.checkpoint_every == 0 or end_of_epoch or stopped is not None:
                        self.save_last()
                    for callback in self.callbacks:
                        callback(self)
                    if stopped is None and self.stop_reason is not None:
                        stopped = self.stop_reason
                        self.save_last()
                    if stopped is not None:
                        break
            if stopped != "interrupted" and self.last_eval_step != self.step:
                self.validate()
                self.save_last()
        finally:
            if bar is not None:
                bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        result = FitResult(self.run_dir, self.step, self.epoch, stopped, self.best_path, self.last_path,
                           val_metrics=dict(self.val_metrics))
        if stopped != "interrupted" and test:
            result.test_metrics = self.test()
        if self.log is not None:
            self.log.close()
        return result

    def test(self) -> dict:
        """Metrics of the best checkpoint on the test split (validation if there is none); written to the run folder."""
        if self.dist.world_size > 1:
            dist.barrier()  # best.pt is complete
        best = load_checkpoint(self.best_path, map_location=self.device) if self.best_path.exists() else None
        if self.dist.world_size > 1:
            dist.barrier()  # every process has read it before the main one rewrites it below
        if best is not None:
            self.model.load_state_dict(best["state_dict"])
            if self.ema is not None:  # evaluate() swaps in the EMA weights: make them the best ones
                self.ema.shadow = {k: best["state_dict"][k].clone() for k in self.ema.shadow}
        split, dataset = ("test", self.test_set) if len(self.test_set) > 0 else ("val", self.val_set)
        metrics, predictions = self.evaluate(dataset, keep_predictions=self.is_main, sharded=False)
        metrics = {"split": split, "structures": len(dataset), "target": self.target.name, "unit": self.target.unit,
                   "intensive": self.target.intensive,
                   "step": best["metrics"]["step"] if best is not None else self.step, **metrics}
        if self.is_main:
            (self.run_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
            torch.save({**predictions, "split": split, "unit": self.target.unit}, self.run_dir / "predictions_test.pt")
            if best is not None:
                best["metrics"].update({f"{split}_{k}": v for k, v in metrics.items() if isinstance(v, float)})
                save_checkpoint(best, self.best_path)
        return metrics

    def close(self) -> None:
        self.dist.close()


def fit(config: Union[TrainConfig, str, Path], resume: bool = False,
        callbacks: Sequence[Callable[[Trainer], None]] = (), test: bool = True) -> FitResult:
    """Train a model from a `TrainConfig` (or the path of a YAML recipe).

    Args:
        config: the run; ``config.log.run_dir`` receives checkpoints and logs.
        resume: continue the run in ``config.log.run_dir`` from its ``last.pt``.
        callbacks: functions called with the `Trainer` after every step (they may end the run
            with `Trainer.request_stop`).
        test: evaluate the best checkpoint on the test split at the end; False leaves the test
            structures unseen (a hyperparameter search sees validation data only).

    Returns:
        A `FitResult` with the validation metrics of the last evaluation and,
        unless interrupted, the test metrics of the best checkpoint.

    Raises:
        ConfigError: the recipe cannot be used (named key, expected value).
        FileNotFoundError: a dataset file or the run to resume is missing.
        FileExistsError: the run folder already holds a run and ``resume`` is False.
        TrainingDiverged: NaN/inf loss or gradients; ``last.pt`` keeps the last good state.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    trainer = Trainer(config, resume=resume, callbacks=callbacks)
    try:
        return trainer.run(test=test)
    finally:
        trainer.close()


def resume_config(run_dir: Union[str, Path]) -> TrainConfig:
    """The recipe a run folder was started with (its ``config.yaml``), pointed at that folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} has no config.yaml; is it a geognn run folder?")
    config = load_config(run_dir / "config.yaml")
    return replace(config, log=replace(config.log, run_dir=str(run_dir)))


def resume(run_dir: Union[str, Path], callbacks: Sequence[Callable[[Trainer], None]] = ()) -> FitResult:
    """Continue the run in ``run_dir`` from its ``last.pt`` with the recipe it was started with."""
    return fit(resume_config(run_dir), resume=True, callbacks=callbacks)


__all__ = ["fit", "resume", "resume_config", "Trainer", "FitResult", "TrainingDiverged"]
