"""The training loop behind :func:`normlab.lab.trainer.train`: set-up, resume, epochs, checkpoints, the store.

:class:`RunLoop` is one call of ``train`` (see :mod:`normlab.lab.trainer` for what a run does and guarantees);
:class:`TrainResult` is what it returns and :func:`evaluate` the per-epoch evaluation. The loop reads top to
bottom: :meth:`RunLoop.execute` → ``_train`` → ``_run_epoch`` (→ ``_train_epoch``, :func:`evaluate`, callbacks,
checkpoint, store, table line) → ``_finish``.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from normlab.lab.build import (TrainData, build_data, build_model, build_optimizer, sparsity_penalty,
                               transform_gradients_)
from normlab.lab.callbacks import Callback, TrainContext, build_callbacks
from normlab.lab.checkpoint import atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from normlab.lab.config import TrainConfig
from normlab.lab.distributed import DistContext, all_reduce_sum, convert_sync_batchnorm, shard
from normlab.lab.paths import run_dir, store_path
from normlab.lab.schedules import build_scheduler

__all__ = ["RunLoop", "TrainResult", "evaluate", "TIMING_KEYS", "CHECKPOINT_NAME", "FINAL_NAME", "LOG_NAME"]

TIMING_KEYS = ("epoch_time_s", "samples_per_s")  #: metrics that measure time, not the result (not reproducible)
CHECKPOINT_NAME, FINAL_NAME, LOG_NAME = "checkpoint.pt", "final.pt", "log.txt"
_FORMAT = 1


@dataclass
class TrainResult:
    """What :func:`normlab.lab.trainer.train` returns.

    Attributes:
        run_id: the config's hash (the store's key).
        metrics: the final metrics (see :mod:`normlab.lab.trainer`).
        history: per-epoch metrics, ``[{"epoch": 0, "train_loss": ..., ...}, ...]``.
        checkpoint: ``final.pt`` (weights, config, metrics; read it with :func:`normlab.lab.trainer.load_trained`).
        config: the configuration trained.
        run_dir: the run's folder.
        resumed: this call continued an interrupted run from its checkpoint.
        skipped: the run had finished before; nothing was trained.
        data: one line of data provenance.
        wall_time_s: seconds this call took.
    """

    run_id: str
    metrics: dict[str, float]
    history: list[dict[str, float]]
    checkpoint: Path
    config: TrainConfig
    run_dir: Path
    resumed: bool = False
    skipped: bool = False
    data: str = ""
    wall_time_s: float = 0.0


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, context: DistContext, *, task: str = "image",
             autocast: Any = contextlib.nullcontext, channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` over one pass of ``loader`` (summed over processes).

    Returns:
        ``{"test_loss", "test_acc"}`` (and ``"test_bpc"`` = loss / ln 2 for language models).
    """
    was_training = model.training
    model.eval()
    loader.set_epoch(0)  # the same samples in the same order at every evaluation
    totals = torch.zeros(3, dtype=torch.float64, device=context.device)  # loss sum, correct, count
    for inputs, targets in loader:
        if channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast():
            outputs = model(inputs)
        logits, labels = outputs.flatten(0, -2).float(), targets.flatten()
        totals[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        totals[1] += (logits.argmax(-1) == labels).sum()
        totals[2] += labels.numel()
    totals = all_reduce_sum(totals, context)
    model.train(was_training)
    loss, accuracy = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
    metrics = {"test_loss": loss, "test_acc": accuracy}
    if task == "language":
        metrics["test_bpc"] = loss / math.log(2)
    return metrics


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


@contextlib.contextmanager
def _numerics(deterministic: bool, device: torch.device):
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


class RunLoop:
    """One call of :func:`train` (kept in one object so the loop reads top to bottom)."""

    def __init__(self, config: TrainConfig, context: DistContext, home: Any, store: Any, callbacks: list[Callback],
                 progress: bool, verbose: bool, data_dir: Any, download: bool) -> None:
        self.config, self.context, self.home = config, context, home
        self.run_id = config.run_id
        self.dir = run_dir(self.run_id, home)
        self.extra_callbacks, self.data_dir, self.download = callbacks, data_dir, download
        self.progress, self.verbose = progress and context.is_main, verbose and context.is_main
        self.store = None
        if context.is_main:
            from normlab.lab.store import ResultsStore

            self.store = store if store is not None else ResultsStore(store_path(home))
        self.started = time.perf_counter()

    # -- the run, top to bottom ---------------------------------------------------------------------------------
    def execute(self) -> TrainResult:
        done = self._broadcast(self._finished_result() if self.context.is_main else None)
        if done is not None:
            return done
        config, context = self.config, self.context
        if config.batch_size % context.world_size:
            raise ValueError(f"batch_size={config.batch_size} must be divisible by the {context.world_size} processes")
        # Data first: a missing data folder is a usage error, not a failed run.
        self.data = build_data(config, data_dir=self.data_dir, device=context.device, download=self.download,
                               progress=self.progress, rank=context.rank, world_size=context.world_size)
        if self.store is not None:
            from normlab.lab.store import collect_environment

            environment = dict(collect_environment(context.device), world_size=context.world_size)
            self.store.start_run(config.to_dict(), environment=environment)
            self.store.log_artifact(self.run_id, "data", self.data.provenance)
        try:
            with _numerics(config.deterministic, context.device):
                return self._train()
        except Exception as error:
            if self.store is not None:
                self.store.fail_run(self.run_id, error)
            raise

    def _finished_result(self) -> TrainResult | None:
        record = self.store.find(self.config.to_dict())
        if record is not None and record.status == "finished":
            self._say(f"run {self.run_id} already finished; returning its stored result")
            return self._result(record.metrics or {}, self.store.history(self.run_id), skipped=True)
        final = self.dir / FINAL_NAME
        if final.is_file():  # killed after writing final.pt but before the store heard of it
            state = load_checkpoint(final)
            self.store.start_run(self.config.to_dict(), environment={"note": "recovered from final.pt"})
            self.store.finish_run(self.run_id, state["metrics"])
            (self.dir / CHECKPOINT_NAME).unlink(missing_ok=True)
            return self._result(state["metrics"], state["history"], skipped=True, data=state.get("data", ""))
        return None

    def _train(self) -> TrainResult:
        config, context, data = self.config, self.context, self.data
        module = build_model(config, data).to(context.device)
        if config.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if config.sync_bn and context.enabled:
            module = convert_sync_batchnorm(module, context.device.type)
        self.module = module
        self.optimizer = build_optimizer(config, module)
        self.scheduler = build_scheduler(self.optimizer, config, len(data.train))
        self.scaler = torch.amp.GradScaler(context.device.type, enabled=config.precision == "fp16")
        self.callbacks = build_callbacks(config.callbacks, config) + self.extra_callbacks
        self.history: list[dict[str, float]] = []
        self.step, start_epoch = 0, 0
        resumed = (self.dir / CHECKPOINT_NAME).is_file()
        if resumed:
            start_epoch = self._resume(data)
        self.train_model, self.eval_model = self._wrap(module)
        self.ctx = TrainContext(config, module, self.optimizer, self.scheduler, context.device, self.run_id, self.dir,
                                self.store, context.rank, context.world_size, start_epoch, self.step, self.history)
        self._announce(data, start_epoch)
        for callback in self.callbacks:
            callback.on_train_start(self.ctx)
        diverged = bool(self.history) and self.history[-1].get("diverged", 0.0) == 1.0
        for epoch in range(start_epoch, config.epochs):
            if diverged:
                break
            diverged = self._run_epoch(epoch)
        return self._finish(diverged, resumed)

    def _run_epoch(self, epoch: int) -> bool:
        config, data = self.config, self.data
        self.ctx.epoch = epoch
        torch.manual_seed(_epoch_seed(config.seed, epoch, self.context.rank))  # dropout: a function of the epoch
        for callback in self.callbacks:
            callback.on_epoch_start(self.ctx)
        begin = time.perf_counter()
        metrics = self._train_epoch(epoch)
        elapsed = time.perf_counter() - begin
        self._sync_buffers()
        metrics.update(evaluate(self.eval_model, data.test, self.context, task=data.task, autocast=self._autocast,
                                channels_last=config.channels_last))
        metrics.update(lr=self.optimizer.param_groups[0]["lr"], epoch_time_s=elapsed,
                       samples_per_s=data.samples_per_epoch / max(elapsed, 1e-9))
        for callback in self.callbacks:
            metrics.update(callback.on_epoch_end(self.ctx, dict(metrics)) or {})
        diverged = not math.isfinite(metrics["train_loss"])
        metrics["diverged"] = float(diverged)
        self.history.append({"epoch": epoch, **metrics})
        if self.context.is_main:
            self._save_checkpoint(epoch + 1)
            self.store.log_epoch(self.run_id, epoch, metrics)
        self._log_line(epoch, metrics)
        self._barrier()
        return diverged

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        config, context, data = self.config, self.context, self.data
        model, optimizer, scaler = self.train_model, self.optimizer, self.scaler
        batch_callbacks = [c for c in self.callbacks if c.wants_batches()]
        totals = torch.zeros(3, dtype=torch.float64 if context.device.type != "mps" else torch.float32,
                             device=context.device)  # loss sum, correct, count (this process)
        model.train()
        bar = self._bar(epoch)
        for step_in_epoch, batch in enumerate(data.train):
            inputs, targets = shard(batch, context)
            if config.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                outputs = model(inputs)
                logits, labels = outputs.flatten(0, -2), targets.flatten()
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            objective = loss + sparsity_penalty(self.module, config.sparsity_l1) if config.sparsity_l1 else loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()
            scaler.unscale_(optimizer)  # a no-op unless fp16
            transform_gradients_(config, self.module)
            scaler.step(optimizer)
            scaler.update()
            self.scheduler.step()
            self.step += 1
            self.ctx.step = self.step
            with torch.no_grad():
                totals[0] += loss.detach().to(totals.dtype) * labels.numel()
                totals[1] += (logits.detach().argmax(-1) == labels).sum()
                totals[2] += labels.numel()
            for callback in batch_callbacks:
                callback.on_batch_end(self.ctx, loss.detach())
            if bar is not None:
                bar.update(inputs.shape[0] * context.world_size)
                if step_in_epoch % 25 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if bar is not None:
            bar.close()
        totals = all_reduce_sum(totals, context)
        return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item()}

    def _finish(self, diverged: bool, resumed: bool) -> TrainResult:
        last = self.history[-1]
        metrics = {k: v for k, v in last.items() if k not in (*TIMING_KEYS, "epoch", "lr")}
        accuracies = [h["test_acc"] for h in self.history if math.isfinite(h["test_acc"])]
        metrics.update(best_test_acc=max(accuracies) if accuracies else math.nan,
                       epochs_completed=float(len(self.history)), diverged=float(diverged))
        if self.context.is_main:
            atomic_save({"format": _FORMAT, "config": self.config.to_dict(), "model": self.module.state_dict(),
                         "num_outputs": self.data.num_outputs, "metrics": metrics, "history": self.history,
                         "data": self.data.summary}, self.dir / FINAL_NAME)
            self.store.finish_run(self.run_id, metrics)
            (self.dir / CHECKPOINT_NAME).unlink(missing_ok=True)
        self._barrier()
        result = self._result(metrics, self.history, resumed=resumed, data=self.data.summary)
        for callback in self.callbacks:
            callback.on_train_end(self.ctx, result)
        self._say(f"run {self.run_id} finished: " + "  ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k in ("test_acc", "test_loss", "best_test_acc")))
        return result

    # -- pieces -------------------------------------------------------------------------------------------------
    def _wrap(self, module: nn.Module) -> tuple[nn.Module, nn.Module]:
        train_model: nn.Module = module
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            train_model = DistributedDataParallel(module, device_ids=device_ids)
        eval_model = module  # evaluation needs no gradient sync, and shards may differ in size
        if self.config.compile:
            train_model, eval_model = torch.compile(train_model), torch.compile(module)
        return train_model, eval_model

    def _autocast(self) -> Any:
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.context.device.type, dtype=dtype)

    def _resume(self, data: TrainData) -> int:
        state = load_checkpoint(self.dir / CHECKPOINT_NAME, map_location=self.context.device)
        problems = [(key, saved, now) for key, saved, now in (
            ("config", state["config"], self.config.to_dict()), ("data", state["data"], data.summary),
            ("world_size", state["world_size"], self.context.world_size)) if saved != now]
        if problems:
            key, saved, now = problems[0]
            raise ValueError(f"cannot resume run {self.run_id} from {self.dir / CHECKPOINT_NAME}: it was saved with "
                             f"{key}={saved!r}, now {key}={now!r}. Use the same settings, or delete the checkpoint "
                             f"to start over")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        data.train.load_state_dict(state["loader"])
        restore_rng_state(state["rng"])
        for callback, saved in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(saved)
        self.history, self.step = list(state["history"]), int(state["step"])
        if self.store is not None:  # an epoch logged after the checkpoint may be missing from the store
            for entry in self.history:
                self.store.log_epoch(self.run_id, int(entry["epoch"]), {k: v for k, v in entry.items() if k != "epoch"})
        return int(state["epoch"])

    def _save_checkpoint(self, epochs_done: int) -> None:
        atomic_save({
            "format": _FORMAT, "config": self.config.to_dict(), "epoch": epochs_done, "step": self.step,
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "loader": self.data.train.state_dict(), "rng": capture_rng_state(),
            "callbacks": [c.state_dict() for c in self.callbacks], "history": self.history,
            "data": self.data.summary, "world_size": self.context.world_size,
        }, self.dir / CHECKPOINT_NAME)

    def _sync_buffers(self) -> None:
        """Give every process rank 0's buffers (running statistics differ per rank without SyncBatchNorm)."""
        if self.context.enabled:
            for buffer in self.module.buffers():
                dist.broadcast(buffer, src=0)

    def _broadcast(self, value: Any) -> Any:
        if not self.context.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _barrier(self) -> None:
        if self.context.enabled:
            dist.barrier()

    def _result(self, metrics: dict, history: list, *, skipped: bool = False, resumed: bool = False,
                data: str = "") -> TrainResult:
        return TrainResult(self.run_id, dict(metrics), list(history), self.dir / FINAL_NAME, self.config, self.dir,
                           resumed=resumed, skipped=skipped, data=data,
                           wall_time_s=time.perf_counter() - self.started)

    # -- console ------------------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.verbose:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)

    def _announce(self, data: TrainData, start_epoch: int) -> None:
        config = self.config
        where = f"{self.context.device}" + (f" x {self.context.world_size} processes" if self.context.enabled else "")
        self._say(f"run {self.run_id}  {config.model} / {config.norm}  on {where}  ({self.dir})")
        self._say(f"data: {data.summary}")
        if start_epoch:
            self._say(f"resumed from the checkpoint after epoch {start_epoch} of {config.epochs}")
        self._say(_HEADER)

    def _log_line(self, epoch: int, metrics: dict[str, float]) -> None:
        line = _format_line(epoch, self.config.epochs, metrics)
        self._say(line)
        if self.context.is_main:
            with open(self.dir / LOG_NAME, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def _bar(self, epoch: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        unit = "img" if self.data.task == "image" else "seq"
        return tqdm(total=self.data.samples_per_epoch, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit=unit,
                    unit_scale=True, leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


_HEADER = f"{'epoch':>9}  {'train_loss':>10}  {'train_acc':>9}  {'test_loss':>9}  {'test_acc':>8}  {'lr':>9}  " \
          f"{'time_s':>7}  {'samples/s':>9}"


def _format_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """One fixed-width row under :data:`_HEADER` (accuracies in percent)."""
    return (f"{f'{epoch + 1}/{epochs}':>9}  {metrics['train_loss']:>10.4f}  {100 * metrics['train_acc']:>8.2f}%  "
            f"{metrics['test_loss']:>9.4f}  {100 * metrics['test_acc']:>7.2f}%  {metrics['lr']:>9.3g}  "
            f"{metrics['epoch_time_s']:>7.1f}  {metrics['samples_per_s']:>9.0f}")
