"""Fine-tuning a model in memory (a pruned network) on a run's data, and measuring its test accuracy.

The trainer trains what a :class:`~normlab.lab.config.TrainConfig` describes from scratch; a pruned network is a
modified trained model, so the pruning study fine-tunes it here: SGD with momentum 0.9 and weight decay from the
config, a cosine schedule from ``lr`` to 0 over ``epochs``, the run's own augmented batches and data order
(``seed``), then accuracy on the run's test set. Deterministic for a given seed on one machine.

Examples:
    >>> import torch
    >>> from normlab.lab.config import TrainConfig
    >>> config = TrainConfig(model="vgg11", model_kwargs={"cfg": [4, "M"]}, dataset="synthetic", train_subset=32,
    ...                      test_subset=16, data_kwargs={"image_size": 8, "num_classes": 2}, batch_size=8)
    >>> from normlab.lab.build import build_model
    >>> acc = finetune(build_model(config), config, epochs=1, lr=0.01)
    >>> 0.0 <= acc <= 1.0
    True
"""
from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["finetune", "test_accuracy"]


def test_accuracy(model: Any, loader: Any) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``loader``'s ``(inputs, labels)`` batches."""
    import torch

    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in loader:
            correct += (model(inputs).argmax(dim=1) == labels).sum().item()
            total += labels.numel()
    model.train(was_training)
    return correct / total if total else math.nan


def finetune(model: Any, config: Any, *, epochs: int, lr: float, data_dir: str | os.PathLike | None = None,
             seed: int | None = None) -> float:
    """Fine-tune ``model`` in place on ``config``'s data for ``epochs`` and return its final test accuracy.

    Args:
        model: the network (e.g. after :func:`normlab.pruning.slim`); trained in place on the CPU.
        config: the :class:`~normlab.lab.config.TrainConfig` whose data, batch size, weight decay and seed to use.
        epochs: passes over the training set (0: only evaluate).
        lr: the initial learning rate of the cosine schedule.
        data_dir: the data folder (else ``$NORMLAB_DATA``).
        seed: the data-order seed (default ``config.seed``).

    Returns:
        Test accuracy in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    from normlab.lab.build import build_data

    if epochs < 0 or lr < 0:
        raise ValueError(f"finetune: epochs and lr must be >= 0, got {epochs} and {lr}")
    config = config.replace(seed=config.seed if seed is None else seed)
    data = build_data(config, data_dir=data_dir, progress=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=config.weight_decay)
    total_steps = max(1, epochs * len(data.train))
    step = 0
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for _ in range(epochs):
            for inputs, labels in data.train:  # the loader moves to the next epoch's order by itself
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
                loss = F.cross_entropy(model(inputs), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    return test_accuracy(model, data.test)
