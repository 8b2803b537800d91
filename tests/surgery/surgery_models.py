"""Small models in the styles surgery must handle: plain Sequential, nested containers, a torchvision-style
ResNet with a functional forward and skip connections, shared modules, and one fx cannot trace."""

from __future__ import annotations

import torch
from torch import nn

IMAGE = (3, 16, 16)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial γ, β and running statistics, so copies and folds are really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name in ("weight", "bias", "running_mean"):
                t = getattr(module, name, None)
                if isinstance(t, torch.Tensor) and t.dim() == 1 and t.is_floating_point() and \
                        not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1.0 if name == "weight" else 0.0))
            var = getattr(module, "running_var", None)
            if isinstance(var, torch.Tensor):
                var.copy_(torch.rand(var.shape, generator=g) * 2 + 0.1)
    return model


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3×3 convs with BatchNorm, a skip connection, optional downsample."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """A torchvision-style ResNet (stem, two stages of BasicBlocks, the second with a downsample, a fc head)."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, 2, bias=False), nn.BatchNorm2d(2 * width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2, down), BasicBlock(2 * width, 2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def plain_sequential() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16),
                         nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


class Nested(nn.Module):
    """Norms inside a ModuleList of Sequentials and a ModuleDict of heads."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in ((3, 8), (8, 16))
        )
        self.heads = nn.ModuleDict({
            "cls": nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5)),
            "aux": nn.Linear(16, 2),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = x.mean((2, 3))
        return torch.cat([self.heads["cls"](x), self.heads["aux"](x)], 1)


class Shared(nn.Module):
    """One BatchNorm used after two different convs (reachable at three paths)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(8)
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(3, 8, k, padding=k // 2), self.norm) for k in (1, 3))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branches[0](x) + self.branches[1](x)
        return self.head(y.mean((2, 3)))


class Untraceable(nn.Module):
    """A forward with data-dependent control flow (fx cannot trace it); the pairs sit in a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        if y.mean() > 100:  # data-dependent: untraceable
            y = y * 0
        return self.head(y.mean((2, 3)))


class Transposed(nn.Module):
    """Grouped and depthwise convolutions, and a grouped transposed convolution, each followed by BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
            nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12),
            nn.ConvTranspose2d(12, 8, 2, stride=2, groups=4), nn.BatchNorm2d(8),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Unfoldable(nn.Module):
    """Each BatchNorm here cannot be folded, for a different reason (named in the attribute)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.bn_after_add = nn.BatchNorm2d(8)
        self.conv_c = nn.Conv2d(8, 8, 1)
        self.bn_input_shared = nn.BatchNorm2d(8)
        self.conv_d = nn.Conv2d(8, 8, 1)
        self.bn_train = nn.BatchNorm2d(8)
        self.conv_e = nn.Conv2d(8, 8, 1)
        self.bn_no_stats = nn.BatchNorm2d(8, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_after_add(self.conv_a(x) + self.conv_b(x))
        c = self.conv_c(y)
        y = self.bn_input_shared(c) + c
        y = self.bn_train(self.conv_d(y))
        return self.bn_no_stats(self.conv_e(y))


def unfoldable() -> nn.Module:
    model = Unfoldable().eval()
    model.bn_train.train()
    return model


def image_batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *IMAGE), generator=torch.Generator().manual_seed(seed))


class TinyTransformer(nn.Module):
    """Pre-LN Transformer-style blocks (LayerNorm → MLP, residual) with a final LayerNorm and a head."""

    def __init__(self, dim: int = 16, depth: int = 2, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(dim), "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                          nn.Linear(2 * dim, dim))})
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = x + block["mlp"](block["norm"](x))
        return self.head(self.norm(x))


def token_batch(n: int = 4, length: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50, (n, length), generator=torch.Generator().manual_seed(seed))
