"""The three study profiles: how much compute a run of the studies may take, and what data it uses.

=========  ==========================================================  =======  ===============================
profile    for                                                         seeds    data
=========  ==========================================================  =======  ===============================
smoke      CI and trying it out: every study end to end in ≤ 3 minutes  2        synthetic images and text
           on 2 CPU cores; its verdicts always say "inconclusive:
           smoke profile"
quick      2 CPU cores: each study ≤ 15 minutes, all ≤ 60 minutes;      3        CIFAR-10 (a local copy, even a
           small models and few epochs                                           partial one) and Tiny Shakespeare
paper      a GPU: full CIFAR-10/100 and the usual schedules             3–5      full CIFAR-10/100, Tiny
                                                                                 Shakespeare
=========  ==========================================================  =======  ===============================

``smoke`` trains in the calling process by default (its runs are tiny: starting worker processes would cost more
than they save); ``quick`` uses 2 worker processes, ``paper`` one (the GPU). A profile fixes only what every
study shares (seeds, data source, whether verdicts may conclude, default workers); each study
module keeps its own per-profile settings (models, epochs, grids) beside its protocol, where they can be read
together.

Examples:
    >>> p = get_profile("quick")
    >>> p.seeds, p.image_data, p.conclusive
    ((0, 1, 2), 'cifar10', True)
    >>> get_profile("smoke").conclusive
    False
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Profile", "PROFILES", "PROFILE_NAMES", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """What a profile fixes for every study."""

    name: str
    description: str
    seeds: tuple[int, ...]  # every arm of every study is trained once per seed
    image_data: str  # "synthetic" (made on the fly), "cifar10" or "cifar100" (a local copy or a download)
    text_data: str  # "synthetic" or "tinyshakespeare"
    conclusive: bool  # False: verdicts are forced to "inconclusive: <name> profile"
    device: str  # "cpu" or "auto" (CUDA when available)
    workers: int  # default sweep worker processes (0: train in the calling process, one run after another)
    budget_minutes_per_study: float | None  # the target this profile is designed for (documentation, not enforced)

    @property
    def needs_real_data(self) -> bool:
        """True when the profile reads CIFAR / Tiny Shakespeare (so the CLI must find or download them)."""
        return self.image_data != "synthetic" or self.text_data != "synthetic"


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", "end to end in minutes on a CPU, tiny synthetic data, 1 epoch: checks the machinery, "
                     "concludes nothing", seeds=(0, 1), image_data="synthetic", text_data="synthetic",
                     conclusive=False, device="cpu", workers=0, budget_minutes_per_study=0.5),
    "quick": Profile("quick", "2 CPU cores: small models, few epochs on CIFAR-10 (a local copy, even partial) and "
                     "Tiny Shakespeare, 3 seeds", seeds=(0, 1, 2), image_data="cifar10", text_data="tinyshakespeare",
                     conclusive=True, device="cpu", workers=2, budget_minutes_per_study=15.0),
    "paper": Profile("paper", "a GPU: full CIFAR-10 and the usual schedules (ResNet-20/VGG-16, 160 epochs), 3 seeds",
                     seeds=(0, 1, 2), image_data="cifar10", text_data="tinyshakespeare", conclusive=True,
                     device="auto", workers=1, budget_minutes_per_study=None),
}
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | Profile) -> Profile:
    """The :class:`Profile` called ``name`` (``smoke``, ``quick`` or ``paper``).

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}") from None
