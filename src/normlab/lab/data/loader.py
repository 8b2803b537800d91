"""Resumable minibatch loaders over in-memory tensors: images for classification, token blocks for language models.

Exact resume is the point. Every random draw is a pure function of ``(seed, epoch, position)``: the shuffle of
epoch ``e`` comes from a generator seeded by ``(seed, "shuffle", e)``, and the augmentation of batch ``k`` of
that epoch from one seeded by ``(seed, "batch", e, k)`` (seeds mixed with :class:`numpy.random.SeedSequence`).
So the whole state is ``{"epoch", "position"}``: save :meth:`TensorLoader.state_dict` in a checkpoint, load it
into a fresh loader, and the rest of the run sees exactly the batches an uninterrupted run would have seen —
no generator state to carry, nothing that depends on how many batches were drawn before.

Both loaders are iterables over one epoch: ``for batch in loader`` yields the batches left in the current epoch
and then advances ``epoch`` (``position`` counts batches already handed out, so a state saved inside the loop
body, after a step, resumes at the next batch). Save end-of-epoch checkpoints after the loop has finished.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

__all__ = ["TensorLoader", "BlockLoader", "derive_generator", "sample_blocks"]

_TAGS = {"shuffle": 1, "batch": 2, "blocks": 3}


def derive_generator(seed: int, tag: str, *counters: int) -> torch.Generator:
    """A CPU generator seeded by a hash of ``(seed, tag, *counters)`` — independent streams, no shared state.

    Args:
        seed: the run's seed (any int >= 0).
        tag: which stream: ``"shuffle"``, ``"batch"`` or ``"blocks"``.
        counters: e.g. the epoch and the batch position.

    Returns:
        A freshly seeded ``torch.Generator`` on the CPU.

    Examples:
        >>> a = torch.rand(2, generator=derive_generator(0, "batch", 3, 1))
        >>> torch.equal(a, torch.rand(2, generator=derive_generator(0, "batch", 3, 1)))
        True
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    words = np.random.SeedSequence(seed, spawn_key=(_TAGS[tag], *counters)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)  # 63-bit seed


class _Resumable:
    """``epoch`` / ``position`` bookkeeping and the state-dict protocol shared by both loaders."""

    _identity: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:  # batches per epoch
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch``."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "position"}`` plus the settings a resumed loader must share (checked on load)."""
        return {"epoch": self.epoch, "position": self.position, **{k: getattr(self, k) for k in self._identity}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; refuses one saved with different data or settings."""
        for key in self._identity:
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"loader state was saved with {key}={state[key]!r} but this loader has "
                                 f"{key}={getattr(self, key)!r}; resume with the same data and settings")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"bad loader state epoch={epoch}, position={position} (batches per epoch: {len(self)})")
        self.epoch, self.position = epoch, position

    def _positions(self) -> Iterator[int]:
        """Yield the remaining batch positions of this epoch, keeping ``position`` current; then roll over."""
        while self.position < len(self):
            self.position += 1
            yield self.position - 1
        self.epoch, self.position = self.epoch + 1, 0


class TensorLoader(_Resumable):
    """Shuffled minibatches of (inputs, labels) from tensors held on the training device.

    Args:
        images: inputs, e.g. uint8 :math:`(N, C, H, W)`; moved to ``device`` once.
        labels: :math:`(N,)` targets; moved to ``device`` once.
        batch_size: samples per batch.
        shuffle: a new permutation every epoch (False: the stored order, e.g. for evaluation).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        seed: the seed all randomness derives from (see the module docstring).
        device: where batches are produced; None keeps the tensors where they are.
        transform: ``transform(images, generator) -> tensor`` applied per batch on the device, e.g.
            :class:`normlab.lab.data.augment.ImageTransform`; its generator is the batch's own.

    Shape:
        - yields ``(transform(images[idx]), labels[idx])`` with ``len(idx) <= batch_size``.

    Examples:
        >>> loader = TensorLoader(torch.arange(10), torch.arange(10), batch_size=4, seed=0)
        >>> len(loader), [x.tolist() for x, _ in loader], loader.epoch
        (3, [[4, 5, 3, 8], [7, 0, 2, 1], [6, 9]], 1)
        >>> resumed = TensorLoader(torch.arange(10), torch.arange(10), batch_size=4, seed=0)
        >>> resumed.load_state_dict({"epoch": 0, "position": 2})
        >>> [x.tolist() for x, _ in resumed]
        [[6, 9]]
    """

    _identity = ("num_samples", "batch_size", "shuffle", "drop_last", "seed")

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, device: torch.device | str | None = None,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        super().__init__()
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if drop_last and batch_size > len(images):
            raise ValueError(f"drop_last with batch_size={batch_size} > {len(images)} samples leaves no batches")
        derive_generator(seed, "shuffle")  # validates the seed
        self.images = images.to(device) if device is not None else images
        self.labels = labels.to(self.images.device)
        self.num_samples, self.batch_size = len(images), batch_size
        self.shuffle, self.drop_last, self.seed, self.transform = shuffle, drop_last, seed, transform

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(self.num_samples / self.batch_size)

    @property
    def device(self) -> torch.device:
        """Where the data and the batches live."""
        return self.images.device

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.device)
        order = torch.randperm(self.num_samples, generator=derive_generator(self.seed, "shuffle", self.epoch))
        return order.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, epoch = self._order(), self.epoch
        wants_generator = self.transform is not None and getattr(self.transform, "random", True)
        for position in self._positions():
            index = order[position * self.batch_size:(position + 1) * self.batch_size]
            inputs, targets = self.images[index], self.labels[index]
            if self.transform is not None:
                generator = derive_generator(self.seed, "batch", epoch, position) if wants_generator else None
                inputs = self.transform(inputs, generator)
            yield inputs, targets


class BlockLoader(_Resumable):
    """Random (input, next-token target) blocks from a 1-D token tensor, ``steps_per_epoch`` batches an epoch.

    Batch ``k`` of epoch ``e`` takes ``batch_size`` start offsets uniformly from ``[0, len(tokens) - block_size)``
    with a generator derived from ``(seed, "blocks", e, k)``; see :func:`sample_blocks`.

    Args:
        tokens: :math:`(L,)` int64 token ids; moved to ``device`` once.
        batch_size: blocks per batch (B).
        block_size: tokens per block (T); needs ``L > T``.
        steps_per_epoch: batches per "epoch" (a language model has no natural epoch).
        seed: the seed all randomness derives from.
        device: where batches are produced; None keeps ``tokens`` where it is.

    Shape:
        - yields ``x, y`` each :math:`(B, T)` int64, with ``y[:, t] == x[:, t + 1]`` inside the corpus.

    Examples:
        >>> loader = BlockLoader(torch.arange(100), batch_size=2, block_size=4, steps_per_epoch=3, seed=0)
        >>> x, y = next(iter(loader))
        >>> x.shape, torch.equal(y, x + 1)
        (torch.Size([2, 4]), True)
    """

    _identity = ("num_tokens", "batch_size", "block_size", "steps_per_epoch", "seed")

    def __init__(self, tokens: torch.Tensor, batch_size: int, block_size: int, steps_per_epoch: int, *,
                 seed: int = 0, device: torch.device | str | None = None):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("block_size", block_size),
                            ("steps_per_epoch", steps_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if tokens.dim() != 1 or len(tokens) <= block_size:
            raise ValueError(f"tokens must be 1-D and longer than block_size={block_size}, got {tuple(tokens.shape)}")
        derive_generator(seed, "blocks")
        self.tokens = tokens.to(device) if device is not None else tokens
        self.num_tokens, self.batch_size, self.block_size = len(tokens), batch_size, block_size
        self.steps_per_epoch, self.seed = steps_per_epoch, seed

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        for position in self._positions():
            generator = derive_generator(self.seed, "blocks", epoch, position)
            yield sample_blocks(self.tokens, self.batch_size, self.block_size, generator)


def sample_blocks(tokens: torch.Tensor, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` random blocks of ``block_size`` tokens and their next-token targets.

    Offsets are drawn on the generator's device (CPU by default), then the blocks are gathered in one indexing
    operation on ``tokens``' device.

    Args:
        tokens: :math:`(L,)` token ids.
        batch_size: B.
        block_size: T (< L).
        generator: the source of randomness.

    Returns:
        ``(x, y)``, each :math:`(B, T)`: ``x[b] = tokens[o_b : o_b + T]``, ``y[b] = tokens[o_b + 1 : o_b + T + 1]``.

    Examples:
        >>> x, y = sample_blocks(torch.arange(10), 3, 4, torch.Generator().manual_seed(0))
        >>> x.tolist()
        [[2, 3, 4, 5], [3, 4, 5, 6], [5, 6, 7, 8]]
    """
    if tokens.dim() != 1 or not 0 < block_size < len(tokens):
        raise ValueError(f"need 1-D tokens longer than block_size={block_size}, got shape {tuple(tokens.shape)}")
    source = generator.device if generator is not None else torch.device("cpu")
    starts = torch.randint(0, len(tokens) - block_size, (batch_size,), generator=generator, device=source)
    index = starts.to(tokens.device)[:, None] + torch.arange(block_size + 1, device=tokens.device)  # (B, T + 1)
    window = tokens[index]
    return window[:, :-1], window[:, 1:]
