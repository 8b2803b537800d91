"""Tiny Shakespeare at the character level: the corpus, its vocabulary and a train/validation split.

The corpus (about 1.1 MB of Shakespeare's plays, public domain) was assembled by A. Karpathy for char-rnn
(https://github.com/karpathy/char-rnn) and is the usual smoke test for small character-level language models.

Which file is read: the ``path`` argument (a file, or a folder holding ``input.txt`` or
``tinyshakespeare/input.txt``); else ``$NORMLAB_DATA/tinyshakespeare/input.txt`` or ``$NORMLAB_DATA/input.txt``;
``download=True`` fetches the well-known URL (md5-checked) when none exists. The vocabulary is every distinct
character of the whole text, sorted; the first 90 % of the text is for training and the last 10 % for
validation (contiguous, so no block straddles the two). Batches come from
:class:`normlab.lab.data.loader.BlockLoader`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from .download import download_file
from .paths import DATA_ENV, DataNotFoundError, data_root, default_download_root

__all__ = ["CharVocab", "CharCorpus", "char_corpus", "load_shakespeare", "SHAKESPEARE_URL", "SHAKESPEARE_MD5"]

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"  # the 1,115,394-byte input.txt


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: ``itos[i]`` is the character with id ``i``; ids follow sorted order.

    Args:
        itos: the characters, one per id, no duplicates.

    Examples:
        >>> vocab = CharVocab.from_text("hello")
        >>> vocab.itos, vocab.encode("hole").tolist(), vocab.decode([3, 1])
        (('e', 'h', 'l', 'o'), [1, 3, 2, 0], 'oh')
    """

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.itos)) != len(self.itos) or any(len(c) != 1 for c in self.itos):
            raise ValueError("itos must hold distinct single characters")
        object.__setattr__(self, "stoi", {c: i for i, c in enumerate(self.itos)})

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        """The sorted set of characters in ``text``."""
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """Number of distinct characters."""
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids of ``text`` as an int64 tensor :math:`(L,)`; unknown characters raise ValueError."""
        try:
            return torch.tensor([self.stoi[c] for c in text], dtype=torch.int64)
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in the vocabulary of {self.size}") from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The text for a sequence of ids."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.itos[i] for i in values)


@dataclass(frozen=True, eq=False)
class CharCorpus:
    """A character corpus encoded and split for language modelling.

    Args:
        vocab: the character vocabulary.
        train / val: int64 token ids :math:`(L_{train},)` and :math:`(L_{val},)`.
        source: where the text came from.
        md5: the md5 of the text's UTF-8 bytes.
        official: True when ``md5`` is that of the well-known Tiny Shakespeare file.
    """

    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor
    source: str
    md5: str
    official: bool

    @property
    def summary(self) -> str:
        """One line for logs and the results store."""
        kind = "Tiny Shakespeare" if self.official else "character corpus"
        return (f"{kind}: {len(self.train):,} train / {len(self.val):,} val characters, "
                f"vocabulary {self.vocab.size} ({self.source})")


def char_corpus(text: str, val_fraction: float = 0.1, source: str = "<text>") -> CharCorpus:
    """Encode ``text`` with its own vocabulary and split it: the first ``1 - val_fraction`` trains.

    Args:
        text: the corpus.
        val_fraction: the share of characters, taken from the end, for validation.
        source: a description kept in the result.

    Returns:
        A :class:`CharCorpus`.

    Examples:
        >>> corpus = char_corpus("abcdefghij" * 2, val_fraction=0.1)
        >>> len(corpus.train), len(corpus.val), corpus.vocab.decode(corpus.val)
        (18, 2, 'ij')
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if len(text) < 2:
        raise ValueError("the corpus needs at least 2 characters")
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    n_train = min(max(int(len(ids) * (1 - val_fraction)), 1), len(ids) - 1)
    md5 = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return CharCorpus(vocab, ids[:n_train], ids[n_train:], source, md5, md5 == SHAKESPEARE_MD5)


def _candidates(base: Path) -> list[Path]:
    return [base] if base.is_file() else [base / "input.txt", base / "tinyshakespeare" / "input.txt"]


def load_shakespeare(path: str | os.PathLike | None = None, download: bool = False, *, val_fraction: float = 0.1,
                     progress: bool = True) -> CharCorpus:
    """Load Tiny Shakespeare (or any UTF-8 text file) as a :class:`CharCorpus`.

    Args:
        path: the text file, or a folder holding ``input.txt`` / ``tinyshakespeare/input.txt``; None reads
            ``$NORMLAB_DATA``.
        download: fetch :data:`SHAKESPEARE_URL` (md5-checked) when no file is found; it goes to ``path`` (a
            folder, or a file name ending in a suffix), else ``$NORMLAB_DATA/tinyshakespeare``, else
            :func:`normlab.lab.data.paths.default_download_root` ``/tinyshakespeare``.
        val_fraction: the share held out for validation, from the end of the text.
        progress: show a progress bar while downloading.

    Returns:
        The encoded, split corpus; ``official`` says whether the file is the well-known one.

    Raises:
        DataNotFoundError: no file found and ``download`` is False (the message says how to get it).
    """
    root = data_root(path)
    if root is not None and path is None:  # from $NORMLAB_DATA: a data root with a tinyshakespeare folder
        candidates = [root / "tinyshakespeare" / "input.txt", root / "input.txt"]
    elif root is not None:
        candidates = _candidates(root)
    else:
        candidates = []
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        if not download:
            looked = ", ".join(map(str, candidates)) or "nowhere: no path given and NORMLAB_DATA is unset"
            raise DataNotFoundError(
                f"no Tiny Shakespeare text found (looked in: {looked}). Pass a path (--data-dir), set {DATA_ENV} "
                f"to a folder holding tinyshakespeare/input.txt, or use download=True (--download) with network "
                f"access ({SHAKESPEARE_URL}).")
        if root is None:
            target = default_download_root() / "tinyshakespeare" / "input.txt"
        elif path is not None and root.suffix:
            target = root
        else:
            target = candidates[0]
        found = download_file(SHAKESPEARE_URL, target, SHAKESPEARE_MD5, progress=progress)
    try:
        text = found.read_bytes().decode("utf-8")  # bytes, not read_text: keep line endings, so md5s compare
    except UnicodeDecodeError as error:
        raise ValueError(f"{found} is not UTF-8 text: {error}") from None
    return char_corpus(text, val_fraction, str(found.resolve()))
