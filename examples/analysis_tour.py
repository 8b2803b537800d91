"""A tour of normlab's measuring tools on a small CIFAR-style BatchNorm network (a few minutes on a CPU).

It trains the network with SGD (momentum, weight decay and the network-slimming L1 penalty on γ), then shows
the five tools of ``normlab.analysis`` and ``normlab.pruning``:

1. hypersphere — ``sphere_stats``: every normalized vector has norm √n, whatever the norm coming in;
2. scale invariance — ``scale_invariant_parameters``: conv weights before BatchNorm are invariant, their
   gradient is orthogonal to them;
3. weight-norm dynamics — ``WeightNormTracker``: the plain-SGD growth law ‖w'‖² = ‖w‖² + η²‖g‖², and the
   equilibrium norm and angular update reached with momentum and weight decay;
4. adversarial vulnerability — ``robust_accuracy`` under FGSM and PGD, next to ``weight_norm_stats``;
5. pruning by γ — ``slim`` against the random-channel control at the same ratio, before and after a short
   fine-tune, with parameters and FLOPs.

Data: CIFAR-10 from ``--data-dir`` or ``$NORMLAB_DATA`` (the official python folder or a parent of it); without
either (or with ``--synthetic``) normlab's synthetic CIFAR-shaped set. Run::

    python examples/analysis_tour.py                         # $NORMLAB_DATA, else synthetic
    python examples/analysis_tour.py --data-dir ~/data --epochs 6 --train-size 8000
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import normlab.nn as nl
from normlab.analysis import (
    WeightNormTracker,
    robust_accuracy,
    scale_invariant_parameters,
    sphere_stats,
    weight_norm_stats,
)
from normlab.lab.data import DataNotFoundError, load_cifar, make_synthetic_images
from normlab.pruning import gamma_l1_penalty, random_slim, slim


@dataclasses.dataclass
class TourConfig:
    epochs: int = 4  # enough for ~60% on the CIFAR subset and a settled weight norm
    train_size: int = 4000  # training images used (the rest is skipped to keep the tour short)
    test_size: int = 1000  # test images for accuracy; robustness uses the first 256 of them
    batch_size: int = 64
    lr: float = 0.05  # SGD learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-3  # large enough that the conv weights near their equilibrium norm within the tour
    l1_gamma: float = 5e-4  # slimming's λ on |γ|: Liu et al. use 1e-4 over 160 epochs; the tour trains ~250 steps
    prune_ratio: float = 0.3  # fraction of channels slimming removes
    seed: int = 0


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (a residual block: its BN is coupled to the previous one)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nl.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nl.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def small_net(num_classes: int) -> nn.Module:
    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nl.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*stage(3, 16), Block(16), *stage(16, 32), *stage(32, 64),  # 32² → 16² → 8² → 4²
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


class Normalized(nn.Module):
    """Pixels in [0, 1] → the data set's standardized input; the attacks get the bare model and (mean, std)."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def load_data(args, config: TourConfig):
    if not args.synthetic:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a partial CIFAR copy is reported in its provenance below
                data = load_cifar("cifar10", args.data_dir)
            print(f"data: {data.provenance.summary}")
        except DataNotFoundError as error:
            print(f"data: no CIFAR-10 found ({str(error).split('.')[0]}); using normlab's synthetic set")
            data = None
    else:
        data = None
    if data is None:
        data = make_synthetic_images(num_train=config.train_size, num_test=config.test_size, seed=config.seed)
        print(f"data: {data.provenance.summary}")
    gen = torch.Generator().manual_seed(config.seed)
    train_idx = torch.randperm(len(data.train_labels), generator=gen)[:config.train_size]
    pixels = lambda images: images.float() / 255  # uint8 → [0, 1]
    return (pixels(data.train_images[train_idx]), data.train_labels[train_idx],
            pixels(data.test_images[:config.test_size]), data.test_labels[:config.test_size],
            data.mean, data.std, data.num_classes)


def accuracy(net, x, y, batch=500):
    net.eval()
    with torch.no_grad():
        correct = sum((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return correct / len(y)


def train(net, x, y, config: TourConfig, epochs: int, tracker_names=(), l1=0.0, lr=None, log=True):
    optimizer = torch.optim.SGD(net.parameters(), lr=lr or config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    tracker = WeightNormTracker(net, tracker_names).attach(optimizer) if tracker_names else None
    gen = torch.Generator().manual_seed(config.seed)
    for epoch in range(epochs):
        net.train()
        start, total = time.time(), 0.0
        for idx in torch.randperm(len(y), generator=gen).split(config.batch_size):
            flip = torch.rand(len(idx), generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), x[idx].flip(3), x[idx])
            loss = F.cross_entropy(net(images), y[idx])
            optimizer.zero_grad()
            (loss + gamma_l1_penalty(net, l1)).backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if log:
            print(f"  epoch {epoch + 1:2d}  loss {total / len(y):.3f}  train acc {accuracy(net, x, y):.3f}  "
                  f"({time.time() - start:.0f}s)")
    return tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder or a parent (default: $NORMLAB_DATA)")
    parser.add_argument("--synthetic", action="store_true", help="use normlab's synthetic data set")
    for field in dataclasses.fields(TourConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = parser.parse_args()
    config = TourConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TourConfig)})
    torch.manual_seed(config.seed)
    x, y, x_test, y_test, mean, std, num_classes = load_data(args, config)
    print(f"config: {config}\n")

    model = small_net(num_classes)
    net = Normalized(model, mean, std)
    conv_weights = [n for n, p in net.named_parameters() if p.dim() == 4]
    classifier = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1] + ".weight"

    print("== 3a. weight-norm growth under plain SGD (a copy of the fresh network, 20 steps) ==")
    probe = copy.deepcopy(net)
    optimizer = torch.optim.SGD(probe.parameters(), lr=config.lr)
    tracker = WeightNormTracker(probe, conv_weights[:2] + [classifier]).attach(optimizer)
    for idx in torch.randint(len(y), (20, 32), generator=torch.Generator().manual_seed(config.seed)):
        optimizer.zero_grad()
        F.cross_entropy(probe(x[idx]), y[idx]).backward()
        optimizer.step()
    for name in tracker.parameters:
        deviation = tracker.history(name)["relative_deviation"]
        print(f"  {name:<22} max |‖w'‖² − (‖w‖² + η²‖g‖²)| / pred = {max(deviation):.1e}")
    print("  (conv weights before BatchNorm follow the law; the classifier, not scale-invariant, does not)\n")

    print(f"== training: SGD lr={config.lr} momentum={config.momentum} wd={config.weight_decay} "
          f"+ {config.l1_gamma}·Σ|γ| ==")
    tracker = train(net, x, y, config, config.epochs, tracker_names=conv_weights, l1=config.l1_gamma)
    print(f"  test accuracy {accuracy(net, x_test, y_test):.3f}\n")

    print("== 1. hypersphere: normalized vectors against √n (a training-mode batch of 128) ==")
    net.train()
    print(sphere_stats(net, x[:128]), "\n")

    print("== 2. scale invariance (float64 copy, one batch of 64, training mode) ==")
    report = scale_invariant_parameters(net, F.cross_entropy, (x[:64], y[:64]),
                                        parameters=[n for n, p in net.named_parameters() if p.dim() > 1])
    print(report, "\n")

    print("== 3b. equilibrium with momentum and weight decay (last 100 steps) ==")
    for name, eq in tracker.equilibrium(window=100).items():
        print(f"  {name:<22} ‖w‖ {eq.measured_norm:7.3f}  predicted {eq.predicted_norm:7.3f}   "
              f"angle/step {eq.measured_angular_update:.4f}  predicted {eq.predicted_angular_update:.4f}")
    print()

    print("== 4. adversarial vulnerability (256 test images, L∞, budgets in pixels) ==")
    loader = [(x_test[i:i + 128], y_test[i:i + 128]) for i in (0, 128)]
    budgets = [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
    print(robust_accuracy(model, loader, "fgsm", budgets, normalize=(mean, std)))
    print(robust_accuracy(model, loader, "pgd", budgets, normalize=(mean, std), steps=7,
                          generator=torch.Generator().manual_seed(0)))
    print(weight_norm_stats(model), "\n")

    print(f"== 5. network slimming at ratio {config.prune_ratio} against random channels ==")
    example = x[:1]  # FLOPs per image
    slimmed = slim(net, example, ratio=config.prune_ratio)
    control = random_slim(net, example, slimmed.plan, seed=config.seed)
    print(slimmed.plan)
    print(f"  {'model':<10} {'params':>9} {'MFLOPs':>8} {'acc (pruned)':>13} {'acc (+1 epoch)':>15}  (FLOPs per image)")
    unpruned = dataclasses.replace(slimmed, model=copy.deepcopy(net), after=slimmed.before)  # fine-tuned alike
    for label, result in (("original", unpruned), ("slimmed", slimmed), ("random", control)):
        pruned_acc = accuracy(result.model, x_test, y_test)
        train(result.model, x, y, config, 1, lr=config.lr / 5, log=False)
        print(f"  {label:<10} {result.after.parameters:>9,} {result.after.flops / 1e6:>8.1f} {pruned_acc:>13.3f} "
              f"{accuracy(result.model, x_test, y_test):>15.3f}")


if __name__ == "__main__":
    main()
