"""Trainer throughput against a bare PyTorch loop on the same model and data, from one run.

What is compared (training steps only; evaluation and checkpoints are outside both timings):

* **bare loop** — the least a training step can do: the same model and optimizer (``build_model`` /
  ``build_optimizer``), batches sliced from pre-normalized float tensors already on the device, then
  ``zero_grad → forward → cross_entropy → backward → step``. No augmentation, no metrics, no schedule.
* **trainer** — :func:`normlab.lab.trainer.train` on the same data (uint8 tensors on the device, random crop +
  flip + normalize per batch on the device), with its per-step schedule, metric accumulation, callbacks check and
  progress bookkeeping; its speed is the ``samples_per_s`` it records for the last epoch (the first epoch warms
  up, e.g. torch.compile and the kernels).
* **data pipeline alone** — the trainer's loader (shuffle, gather, augment) with no model, to show it is not the
  bottleneck.

The two are run alternately ``--repeats`` times. Each is timed by the wall clock and by this process's CPU time
(:func:`time.process_time`: on a machine shared with other work the CPU time per image is the steadier figure;
it is meaningful on the CPU only, and with ``--threads 1``). The ratios use the best run of each (like ``timeit``:
other work only ever slows a run down) and the medians. Target: trainer / bare >= 0.90.

Run::

    python benchmarks/trainer_throughput.py                        # resnet20, batch 128, on cuda if available
    NUMBA_NUM_THREADS=1 python benchmarks/trainer_throughput.py --device cpu --threads 1 --batch-size 64 \\
        --steps 10 --width 8
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(config, data, device: torch.device, steps: int, warmup: int) -> float:
    """Images per second of the bare loop (see the module docstring)."""
    from normlab.lab.build import build_model, build_optimizer
    from normlab.lab.data import normalize

    loader = data.train
    statistics_ = loader.transform  # the trainer's ImageTransform: its mean and std
    images = normalize(loader.images, statistics_.mean, statistics_.std)  # (N, C, H, W) float, on the device
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = loader.labels
    model = build_model(config, data).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    step_model = torch.compile(model) if config.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    batch = config.batch_size
    per_epoch = len(images) // batch
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = _clocks()
        index = slice((step % per_epoch) * batch, (step % per_epoch + 1) * batch)
        with autocast:
            loss = F.cross_entropy(step_model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return _rates(steps * batch, start, _clocks())


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rates(images: int, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    return images / (end[0] - start[0]), images / max(end[1] - start[1], 1e-9)


def trainer_run(config, home: str) -> tuple[float, float]:
    """Images per wall-clock and per CPU second of the trainer's training steps in its last epoch."""
    from normlab.lab.callbacks import Callback
    from normlab.lab.trainer import train

    class StepClock(Callback):
        def on_epoch_start(self, ctx):
            _sync(ctx.device)
            self.start, self.images = _clocks(), 0

        def on_batch_end(self, ctx, loss):
            self.images += config.batch_size
            if self.images == data_images:
                _sync(ctx.device)
                self.end = _clocks()

    data_images = config.train_subset // config.batch_size * config.batch_size
    clock = StepClock()
    train(config, home=home, callbacks=[clock], progress=False, verbose=False)
    return _rates(clock.images, clock.start, clock.end)


def pipeline_only(data, device: torch.device) -> float:
    """Images per second of the trainer's loader alone (shuffle, gather, crop, flip, normalize)."""
    loader = data.train
    loader.set_epoch(0)
    _sync(device)
    start, count = time.perf_counter(), 0
    for inputs, _ in loader:
        count += inputs.shape[0]
    _sync(device)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--norm", default="batch_norm")
    parser.add_argument("--width", type=int, default=None, help="ResNet width (default: the paper's 16)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement (one trainer epoch)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the bare loop's timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from normlab.lab.build import build_data
    from normlab.lab.config import TrainConfig
    from normlab.lab.distributed import resolve_device

    device = resolve_device(args.device)
    config = TrainConfig(model=args.model, norm=args.norm, dataset="synthetic", batch_size=args.batch_size,
                         epochs=2, train_subset=args.batch_size * args.steps, test_subset=args.batch_size,
                         model_kwargs={"width": args.width} if args.width else {}, device=str(device),
                         precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                         deterministic=False, schedule="constant")
    data = build_data(config, device=device)
    bare, trainer = [], []
    with tempfile.TemporaryDirectory() as home:
        for repeat in range(args.repeats):
            bare.append(bare_loop(config, data, device, args.steps, args.warmup))
            trainer.append(trainer_run(config.replace(seed=repeat), f"{home}/{repeat}"))
    pipeline = pipeline_only(data, device)
    print(f"device {device}  model {args.model} ({args.norm})  batch {args.batch_size}  steps {args.steps}  "
          f"precision {args.precision}  channels_last {args.channels_last}  compile {args.compile}  "
          f"threads {torch.get_num_threads()}")
    for index, clock in ((0, "wall-clock"), (1, "CPU-time")):
        b, t = [r[index] for r in bare], [r[index] for r in trainer]
        print(f"images per {clock} second{'':<6}{'best':>10}{'median':>10}  runs")
        for name, runs in (("bare PyTorch loop", b), ("normlab trainer", t)):
            print(f"  {name:<30}{max(runs):>10.1f}{statistics.median(runs):>10.1f}  "
                  + ", ".join(f"{v:.1f}" for v in runs))
        print(f"  ratio trainer / bare: best {max(t) / max(b):.3f}, median {statistics.median(t) / statistics.median(b):.3f}"
              f"  (target >= 0.90)")
    print(f"data pipeline alone: {pipeline:.1f} images per wall-clock second")


if __name__ == "__main__":
    main()
