r"""The trainer: one function that trains a :class:`~normlab.lab.config.TrainConfig`, survives being killed, and
stores everything.

Public API::

    result = train(config, home=None, store=None, callbacks=(), progress=True, verbose=True,
                   data_dir=None, download=False)
    model, config = load_trained(run_id_or_config, home=None, device="cpu")
    build_model(config, data=None, num_outputs=None); build_data(config, data_dir=None, device="cpu")

:func:`train` returns a :class:`TrainResult` (``run_id``, ``metrics``, ``history``, ``checkpoint``, ``config``,
``run_dir``, ``resumed``, ``skipped``, ``data``, ``wall_time_s``). The run id is the results store's hash of
``config.to_dict()``; the run's files are in ``<home>/runs/<run_id>/`` (:mod:`normlab.lab.paths`).

What one epoch does: the model trains on shuffled, augmented global batches (drop-last), the learning rate
follows the per-step schedule, then the model is evaluated on the whole test set (images) or on fixed validation
blocks (characters). The epoch's metrics — ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (plus
``test_bpc``, bits per character, for language models), ``lr``, ``epoch_time_s``, ``samples_per_s``, and what
callbacks add — are written to the store (``epoch`` is 0-based there), printed as one fixed-width table line,
and the whole state goes into ``checkpoint.pt``, written atomically.

**Resume, exactly.** The checkpoint holds the model, optimizer, scheduler, gradient scaler, callback states, the
data loader's position, the RNG states, the epoch and the history. Every random draw of an epoch is a function of
``(seed, epoch)`` (the loader's shuffle and augmentation; torch's generator is reseeded at each epoch start for
dropout), so a run killed at any moment and started again redoes the interrupted epoch from its checkpoint and
ends with the same weights and metrics, bit for bit, as a run never interrupted (on the same machine and
settings; ``deterministic=True``). A finished run is not retrained: ``train`` returns the stored result
(``skipped=True``). When it finishes, a run keeps ``final.pt`` (weights, config, metrics, history) and deletes
``checkpoint.pt``.

**Final metrics** (``TrainResult.metrics`` and the store's ``metrics``): the last epoch's metrics except the
timing ones (:data:`TIMING_KEYS`) and ``lr``, plus ``best_test_acc``, ``epochs_completed`` and ``diverged``
(1.0 when the training loss became NaN/inf; training then stops after that epoch and the run still counts as
finished — divergence is a result).

**Several processes.** Under ``torchrun`` the model is wrapped in DistributedDataParallel; each process trains
on its slice of every global batch (:mod:`normlab.lab.distributed`); ``config.sync_bn`` synchronises BatchNorm
statistics; only rank 0 writes checkpoints, the store and the console.

Examples:
    >>> import tempfile
    >>> config = TrainConfig(dataset="synthetic", train_subset=16, test_subset=8, batch_size=8, epochs=1,
    ...                      data_kwargs={"image_size": 8, "num_classes": 2}, model_kwargs={"width": 2}, device="cpu")
    >>> home = tempfile.mkdtemp()
    >>> result = train(config, home=home, progress=False, verbose=False)
    >>> result.run_id == config.run_id, result.metrics["epochs_completed"], result.checkpoint.name
    (True, 1.0, 'final.pt')
    >>> train(config, home=home, progress=False, verbose=False).skipped  # finished: not trained again
    True
    >>> model, _ = load_trained(result.run_id, home=home)
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from torch import nn

from normlab.lab.build import build_data, build_model, norm_scale_parameters
from normlab.lab.callbacks import Callback
from normlab.lab.checkpoint import load_checkpoint
from normlab.lab.config import TrainConfig
from normlab.lab.distributed import setup_distributed, teardown_distributed
from normlab.lab.loop import CHECKPOINT_NAME, FINAL_NAME, TIMING_KEYS, RunLoop, TrainResult, evaluate
from normlab.lab.paths import run_dir, store_path

__all__ = ["train", "load_trained", "TrainResult", "build_model", "build_data", "evaluate", "norm_scale_parameters",
           "TIMING_KEYS", "CHECKPOINT_NAME", "FINAL_NAME"]


def train(config: TrainConfig, *, home: str | os.PathLike | None = None, store: Any = None,
          callbacks: Iterable[Callback] = (), progress: bool = True, verbose: bool = True,
          data_dir: str | os.PathLike | None = None, download: bool = False) -> TrainResult:
    """Train ``config`` (resuming its checkpoint if one exists), log every epoch to the store, return the result.

    Args:
        config: the run.
        home: the lab folder (see :mod:`normlab.lab.paths`); default ``$NORMLAB_HOME`` or ``./normlab-runs``.
        store: a :class:`~normlab.lab.store.ResultsStore`; default the one in ``home``.
        callbacks: extra :class:`~normlab.lab.callbacks.Callback` objects (after those named in the config).
        progress: show a progress bar (rate and ETA) on stderr.
        verbose: print the per-epoch table lines on stdout.
        data_dir: the data folder (else ``$NORMLAB_DATA``); not part of the run's identity.
        download: download the data set when it is missing.

    Returns:
        A :class:`TrainResult`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() needs a TrainConfig, got {type(config).__name__} (use TrainConfig.from_dict)")
    context = setup_distributed(config.device)
    try:
        if config.world_size != context.world_size:
            raise ValueError(f"config.world_size={config.world_size} but {context.world_size} process(es) are running;"
                             f" set world_size to the number of processes (normlab train does this itself)")
        return RunLoop(config, context, home, store, list(callbacks), progress, verbose, data_dir, download).execute()
    finally:
        teardown_distributed(context)


def load_trained(run_id_or_config: str | TrainConfig | dict, home: str | os.PathLike | None = None, *,
                 device: Any = "cpu", allow_unfinished: bool = False) -> tuple[nn.Module, TrainConfig]:
    """Rebuild a trained model and load its final weights (for analyses after training).

    Args:
        run_id_or_config: a run id (a unique prefix of at least 4 characters works), a TrainConfig or its dict.
        home: the lab folder.
        device: where to put the model.
        allow_unfinished: load the last epoch checkpoint of a run that has not finished.

    Returns:
        ``(model, config)`` with the model in eval mode.
    """
    if isinstance(run_id_or_config, dict):
        run_id_or_config = TrainConfig.from_dict(run_id_or_config)
    if isinstance(run_id_or_config, TrainConfig):
        run_id = run_id_or_config.run_id
    elif isinstance(run_id_or_config, str):
        run_id = _expand_run_id(run_id_or_config, home)
    else:
        raise TypeError(f"load_trained needs a run id or a TrainConfig, got {type(run_id_or_config).__name__}")
    folder = run_dir(run_id, home)
    path = folder / FINAL_NAME
    if not path.is_file():
        if allow_unfinished and (folder / CHECKPOINT_NAME).is_file():
            path = folder / CHECKPOINT_NAME
        else:
            raise FileNotFoundError(f"run {run_id} has no {FINAL_NAME} in {folder}: it has not finished (train it, "
                                    f"or pass allow_unfinished=True to load its last checkpoint)")
    state = load_checkpoint(path)
    config = TrainConfig.from_dict(state["config"])
    model = build_model(config, num_outputs=state["num_outputs"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


def _expand_run_id(run_id: str, home: Any) -> str:
    if (run_dir(run_id, home)).is_dir():
        return run_id
    from normlab.lab.store import ResultsStore

    path = store_path(home)
    if not path.is_file():
        raise FileNotFoundError(f"no run {run_id!r}: no folder {run_dir(run_id, home)} and no results store {path}")
    with ResultsStore(path) as store:
        return store.get(run_id).run_id
