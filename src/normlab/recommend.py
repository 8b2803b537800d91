"""The decision guide: which normalization to use for an architecture, a batch size and a set-up.

The guide is a set of rules written down from the papers that measured each choice; every option it returns
says why, with the paper. The one number that decides most of it is the **per-device batch size** — the
number of samples one BatchNorm layer sees in one step (under DistributedDataParallel each process
normalizes its own slice unless SyncBatchNorm is used):

====================  ===========================================================================
situation             recommendation (main reason)
====================  ===========================================================================
CNN, batch ≥ 16       BatchNorm: best accuracy there, free at inference (folds into the conv)
CNN, batch < 16       GroupNorm + Weight Standardization: batch-independent (Wu & He 2018;
                      Qiao et al. 2019); SyncBatchNorm when devices × batch ≥ 16
CNN fine-tuning, < 16 frozen BatchNorm of the pretrained model (Wu & Johnson 2021)
Transformer           pre-norm RMSNorm (Zhang & Sennrich 2019; Xiong et al. 2020); LayerNorm,
                      DynamicTanh (Zhu et al. 2025) as alternatives
RNN                   LayerNorm per time step (Ba et al. 2016), or none
GAN                   spectral norm in the discriminator (Miyato et al. 2018); BatchNorm or none
                      in the generator (Radford et al. 2016)
style transfer        InstanceNorm (Ulyanov et al. 2016, 2017)
====================  ===========================================================================

:func:`recommend` applies the rules to a :class:`Situation` and returns a :class:`Recommendation` (a first
choice, alternatives, choices to avoid, the model audit's warnings that the situation already triggers, and
the user's own study verdicts that bear on it, which ``normlab recommend`` reads from the lab's
``studies/<name>/result.json`` files). This module itself needs neither torch nor the lab.

Examples:
    >>> guide = recommend("cnn", batch_size=4)
    >>> guide.primary.label
    'GroupNorm + Weight Standardization'
    >>> recommend("cnn", batch_size=64).primary.norms, recommend("transformer", batch_size=8).primary.norms
    (('batch_norm',), ('rms_norm',))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

__all__ = ["ARCHES", "HARDWARE", "TASKS", "REFERENCES", "BN_MIN_BATCH", "Situation", "Option", "Finding",
           "Recommendation", "StudyVerdict", "recommend", "STUDIES_BY_ARCH"]

ARCHES = ("cnn", "transformer", "rnn", "gan", "style-transfer")
HARDWARE = ("cpu", "gpu", "multi-gpu")
TASKS = ("classification", "detection", "segmentation", "fine-tuning", "language-modeling", "generation")

#: Per-device batch from which BatchNorm is the first choice for a CNN: Wu & He (2018, table 3, ResNet-50 on
#: ImageNet) measure BatchNorm's error flat from 32 down to 16 samples per device and worse than GroupNorm's at 8.
BN_MIN_BATCH = 16
#: Per-device batch from which Ghost BatchNorm (virtual batches of 32-128) is offered (Hoffer et al. 2017).
GHOST_BN_MIN_BATCH = 256

REFERENCES = {  # key → citation; Option.references name these keys
    "ioffe2015": "Ioffe & Szegedy 2015, Batch Normalization (ICML)",
    "wu2018": "Wu & He 2018, Group Normalization (ECCV)",
    "qiao2019": "Qiao et al. 2019, Micro-Batch Training with Batch-Channel Normalization and Weight Standardization",
    "peng2018": "Peng et al. 2018, MegDet: A Large Mini-Batch Object Detector (CVPR) — cross-GPU BatchNorm",
    "wu2021": "Wu & Johnson 2021, Rethinking \"Batch\" in BatchNorm (arXiv:2105.07576)",
    "ioffe2017": "Ioffe 2017, Batch Renormalization (NeurIPS)",
    "hoffer2017": "Hoffer, Hubara & Soudry 2017, Train longer, generalize better (NeurIPS) — Ghost BatchNorm",
    "singh2020": "Singh & Krishnan 2020, Filter Response Normalization Layer (CVPR)",
    "brock2021": "Brock et al. 2021, High-Performance Large-Scale Image Recognition Without Normalization (ICML)",
    "kolesnikov2020": "Kolesnikov et al. 2020, Big Transfer (BiT): General Visual Representation Learning (ECCV)",
    "ba2016": "Ba, Kiros & Hinton 2016, Layer Normalization (arXiv:1607.06450)",
    "zhang2019": "Zhang & Sennrich 2019, Root Mean Square Layer Normalization (NeurIPS)",
    "xiong2020": "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture (ICML)",
    "vaswani2017": "Vaswani et al. 2017, Attention Is All You Need (NeurIPS)",
    "zhu2025": "Zhu et al. 2025, Transformers without Normalization (CVPR) — Dynamic Tanh",
    "shen2020": "Shen et al. 2020, PowerNorm: Rethinking Batch Normalization in Transformers (ICML)",
    "cooijmans2017": "Cooijmans et al. 2017, Recurrent Batch Normalization (ICLR)",
    "salimans2016": "Salimans & Kingma 2016, Weight Normalization (NeurIPS)",
    "miyato2018": "Miyato et al. 2018, Spectral Normalization for Generative Adversarial Networks (ICLR)",
    "radford2016": "Radford, Metz & Chintala 2016, Unsupervised Representation Learning with DCGANs (ICLR)",
    "gulrajani2017": "Gulrajani et al. 2017, Improved Training of Wasserstein GANs (NeurIPS)",
    "karras2018": "Karras et al. 2018, Progressive Growing of GANs (ICLR) — pixelwise feature normalization",
    "ulyanov2016": "Ulyanov et al. 2016, Instance Normalization: The Missing Ingredient for Fast Stylization",
    "ulyanov2017": "Ulyanov, Vedaldi & Lempitsky 2017, Improved Texture Networks (CVPR)",
    "dumoulin2017": "Dumoulin, Shlens & Kudlur 2017, A Learned Representation for Artistic Style (ICLR)",
    "huang2017": "Huang & Belongie 2017, Arbitrary Style Transfer in Real-time with Adaptive Instance Norm (ICCV)",
}

#: Which of the lab's studies bear on which architecture (their verdicts are cited by :func:`recommend`).
STUDIES_BY_ARCH = {
    "cnn": ("batch_size", "convergence", "weight_norm", "adversarial", "pruning", "speed"),
    "transformer": ("transformer", "speed"),
    "rnn": ("speed",),
    "gan": ("speed",),
    "style-transfer": ("speed",),
}


@dataclass(frozen=True)
class Situation:
    """What the user described.

    Args:
        arch: one of :data:`ARCHES`.
        batch_size: samples per device per step (what one BatchNorm layer sees), an int ≥ 1.
        task: one of :data:`TASKS`, or None.
        hardware: one of :data:`HARDWARE`.
        devices: number of devices for ``multi-gpu`` (None: unknown).
    """

    arch: str
    batch_size: int
    task: str | None = None
    hardware: str = "gpu"
    devices: int | None = None

    def __post_init__(self) -> None:
        for name, value, choices in (("arch", self.arch, ARCHES), ("hardware", self.hardware, HARDWARE)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)} (or leave it out)")
        for name, value in (("batch_size", self.batch_size), ("devices", self.devices)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if self.devices is not None and self.hardware != "multi-gpu" and self.devices > 1:
            raise ValueError(f"devices={self.devices} needs hardware='multi-gpu' (got {self.hardware!r})")

    @property
    def synced_batch(self) -> int | None:
        """The batch SyncBatchNorm normalizes over (batch × devices) when the device count is known."""
        return self.batch_size * self.devices if self.devices else None


@dataclass(frozen=True)
class Option:
    """One choice with its reason: ``norms`` are registry / weight-norm names, ``references`` keys of
    :data:`REFERENCES`, ``evidence`` lines from the user's own studies (filled in by :func:`recommend`)."""

    label: str
    norms: tuple[str, ...]
    reason: str
    references: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """A warning about the situation: ``level`` error/warning/info; ``source`` the rule's owner (``"audit"``)."""

    level: str
    message: str
    source: str = "guide"


@dataclass(frozen=True)
class StudyVerdict:
    """One verdict of one of the user's studies: ``verdict`` is ``supported``, ``not supported`` or
    ``inconclusive``; ``effect`` a short text (effect size and interval); ``source`` the result file."""

    study: str
    claim: str
    verdict: str
    profile: str = "?"
    effect: str = ""
    source: str = ""

    def line(self) -> str:
        """One line for a person: ``study (profile): claim — verdict; effect``."""
        effect = f"; {self.effect}" if self.effect else ""
        return f"{self.study} ({self.profile} profile): {self.claim} — {self.verdict}{effect}"


@dataclass(frozen=True)
class Recommendation:
    """The guide's answer: a first choice, alternatives, things to avoid, findings and the local evidence."""

    situation: Situation
    primary: Option
    alternatives: tuple[Option, ...]
    avoid: tuple[Option, ...] = ()
    findings: tuple[Finding, ...] = ()
    studies: tuple[str, ...] = ()  #: one line per relevant verdict of the user's own studies

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the full text of every cited reference under ``"references"``."""
        data = asdict(self)
        keys = {k for option in (self.primary, *self.alternatives, *self.avoid) for k in option.references}
        data["references"] = {k: REFERENCES[k] for k in sorted(keys)}
        return data


def _cnn(s: Situation) -> tuple[list[Option], list[Option]]:
    bn = Option("BatchNorm", ("batch_norm",),
                f"with {s.batch_size} samples per device the batch statistics are accurate: BatchNorm trains "
                "fastest and generalizes best there, and at inference it folds into the preceding convolution "
                "(normlab.surgery.fold_bn), so it costs nothing when deployed", ("ioffe2015", "wu2018"))
    gn_ws = Option("GroupNorm + Weight Standardization", ("group_norm", "weight_standardization"),
                   "normalizes each sample on its own, so accuracy does not depend on the batch size; Weight "
                   "Standardization closes most of GroupNorm's gap to large-batch BatchNorm (BiT uses the pair for "
                   "transfer learning)", ("wu2018", "qiao2019", "kolesnikov2020"))
    gn = Option("GroupNorm", ("group_norm",),
                "batch-independent (32 groups); Wu & He measure it within about 0.5 % of BatchNorm at batch 32 "
                "and far ahead of it at batch 2-4", ("wu2018",))
    over = f" (here {s.batch_size} × {s.devices} = {s.synced_batch} samples)" if s.devices else ""
    sync = Option("SyncBatchNorm", ("batch_norm",),
                  f"BatchNorm with statistics over the batches of all devices{over} (normlab train --sync-bn, "
                  "normlab.surgery.convert_sync_bn): large-batch statistics from small per-device batches, at "
                  "the cost of one all-reduce per norm layer", ("peng2018", "wu2021"))
    renorm = Option("Batch Renormalization", ("batch_renorm",),
                    "BatchNorm corrected towards its running statistics, which reduces the train/test mismatch "
                    "of small or non-i.i.d. batches", ("ioffe2017",))
    frn = Option("Filter Response Normalization", ("filter_response_norm",),
                 "batch-independent per-channel normalization with a learned threshold (TLU)", ("singh2020",))
    nf = Option("no normalization + adaptive gradient clipping", ("none",),
                "normalizer-free networks train stably with scaled residual branches and adaptive gradient "
                "clipping (normlab.optim); no batch dependence and no normalization cost", ("brock2021",))
    frozen = Option("frozen BatchNorm", ("batch_norm",),
                    "when fine-tuning a BatchNorm-pretrained model with small batches, keep the pretrained "
                    "statistics and affine parameters fixed (normlab.surgery.freeze_norm) instead of re-estimating "
                    "them from a few samples", ("wu2021",))
    avoid: list[Option] = []
    if s.batch_size >= BN_MIN_BATCH:
        options = [bn, gn_ws, gn, nf]
        if s.batch_size >= GHOST_BN_MIN_BATCH:
            options.insert(1, Option("Ghost BatchNorm", ("ghost_batch_norm",),
                                     "BatchNorm over virtual batches of 32-128 samples: with very large batches "
                                     "its noisier statistics regularize and narrow the large-batch "
                                     "generalization gap", ("hoffer2017",)))
        return options, avoid
    avoid.append(Option("BatchNorm (per device)", ("batch_norm",),
                        f"with {s.batch_size} samples per device its statistics are noisy and differ between "
                        f"training and inference; Wu & He measure its ImageNet error rising from 23.7 % at 16 "
                        "to 34.7 % at 2 samples", ("wu2018",)))
    synced = s.synced_batch
    options = [gn_ws, gn, renorm, frn, nf]
    if s.hardware == "multi-gpu":
        if synced is not None and synced >= BN_MIN_BATCH:
            options.insert(0, sync)
        else:
            options.insert(1, sync)
    if s.task == "fine-tuning":
        options.insert(0, frozen)
    return options, avoid


def _transformer(s: Situation) -> tuple[list[Option], list[Option]]:
    pre = ("a pre-norm residual block (normalize the input of each sublayer) keeps gradients well scaled at "
           "initialization, so deep stacks train without the long learning-rate warm-up post-norm needs")
    options = [
        Option("RMSNorm, pre-norm", ("rms_norm",),
               "rescales by the root mean square without centring: the quality of LayerNorm at a lower cost "
               f"(Zhang & Sennrich report 7-64 % less running time); {pre}", ("zhang2019", "xiong2020")),
        Option("LayerNorm, pre-norm", ("layer_norm",),
               f"the standard Transformer normalization, independent of batch and sequence length; {pre}",
               ("ba2016", "xiong2020")),
        Option("Dynamic Tanh (normalization-free)", ("dynamic_tanh",),
               "replaces each norm layer by gamma * tanh(alpha x) + beta: no statistics to compute, and Zhu et al. "
               "match LayerNorm with it on vision and language models (alpha's initial value needs tuning for "
               "large language models)", ("zhu2025",)),
        Option("LayerNorm, post-norm", ("layer_norm",),
               "the original placement (normalize after the residual addition); fine for shallow models, but "
               "it needs learning-rate warm-up and becomes unstable as depth grows", ("vaswani2017", "xiong2020")),
    ]
    avoid = [Option("BatchNorm", ("batch_norm",),
                    "the statistics of variable-length, padded token batches fluctuate strongly; BatchNorm "
                    "underperforms LayerNorm in NLP Transformers", ("shen2020",))]
    return options, avoid


def _rnn(s: Situation) -> tuple[list[Option], list[Option]]:
    options = [
        Option("LayerNorm on the recurrent pre-activations", ("layer_norm",),
               "normalizes each sample at each time step, so it works for any batch size and sequence length, "
               "and speeds up convergence of LSTMs/GRUs", ("ba2016",)),
        Option("no normalization", ("none",),
               "small or shallow recurrent networks with gated units often train well without one; "
               "the cheapest choice", ("ba2016",)),
        Option("Weight Normalization", ("weight_norm",),
               "a reparametrization of the weights: no per-step statistics, no batch dependence, "
               "negligible cost", ("salimans2016",)),
    ]
    avoid = [Option("BatchNorm", ("batch_norm",),
                    "needs separate statistics for every time step and has none for sequences longer than "
                    "those seen in training", ("cooijmans2017", "ba2016"))]
    return options, avoid


def _gan(s: Situation) -> tuple[list[Option], list[Option]]:
    sn = ("spectral norm in the discriminator bounds its Lipschitz constant, which stabilizes adversarial "
          "training without hyperparameter tuning")
    bn_g = Option("spectral norm (discriminator) + BatchNorm (generator)", ("spectral_norm", "batch_norm"),
                  f"{sn}; BatchNorm in the generator, as in DCGAN, helps it train", ("miyato2018", "radford2016"))
    none_g = Option("spectral norm (discriminator) + no norm (generator)", ("spectral_norm", "none"),
                    f"{sn}; without BatchNorm the generator's samples do not depend on the other samples in "
                    "the batch, which matters when the batch is small", ("miyato2018",))
    options = [bn_g, none_g] if s.batch_size >= BN_MIN_BATCH else [none_g, bn_g]
    options += [
        Option("LayerNorm (critic) with gradient penalty", ("layer_norm",),
               "for WGAN-GP: the penalty is per sample, so the critic needs a normalization that does not mix "
               "samples; LayerNorm is the suggested drop-in", ("gulrajani2017",)),
        Option("pixelwise feature normalization (generator)", ("rms_norm",),
               "normalizes each pixel's feature vector (an RMSNorm over channels) to keep generator magnitudes "
               "from escalating", ("karras2018",)),
    ]
    avoid = [Option("BatchNorm in the discriminator with a gradient penalty", ("batch_norm",),
                    "BatchNorm makes each sample's output depend on the batch, which invalidates the "
                    "per-sample gradient penalty", ("gulrajani2017",))]
    return options, avoid


def _style_transfer(s: Situation) -> tuple[list[Option], list[Option]]:
    options = [
        Option("InstanceNorm", ("instance_norm",),
               "normalizes each image and channel on its own, removing instance-specific contrast; used the "
               "same way in training and at test time (no running statistics)", ("ulyanov2016", "ulyanov2017")),
        Option("conditional InstanceNorm", ("instance_norm",),
               "one network for several styles: a learned scale and shift per style", ("dumoulin2017",)),
        Option("adaptive InstanceNorm (AdaIN)", ("instance_norm",),
               "arbitrary styles in real time: the content features take the style features' mean and "
               "standard deviation", ("huang2017",)),
    ]
    avoid = [Option("BatchNorm", ("batch_norm",),
                    "mixes the statistics of different images in a batch and uses running averages at test "
                    "time; InstanceNorm gives markedly better stylizations", ("ulyanov2016",))]
    return options, avoid


_RULES = {"cnn": _cnn, "transformer": _transformer, "rnn": _rnn, "gan": _gan, "style-transfer": _style_transfer}


def _audit_findings(s: Situation) -> list[Finding]:
    """What :func:`normlab.audit` says about BatchNorm at this per-device batch, found by auditing a small probe
    network (conv → BatchNorm) trained at that batch — the audit's own rule and words, not a copy of them."""
    if s.arch not in ("cnn", "gan"):  # the architectures where BatchNorm is a candidate
        return []
    import torch
    from torch import nn

    from normlab.surgery import audit

    with torch.random.fork_rng(devices=[]):  # building the probe must not move the caller's random state
        probe = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    report = audit(probe.train(), torch.zeros(2, 3, 8, 8), batch_size=s.batch_size)
    samples = f"{s.batch_size} sample{'s' * (s.batch_size > 1)} per device"
    return [Finding(f.severity, f"normlab.audit flags BatchNorm with {samples} ({f.severity}): {f.why}; fix: {f.fix}",
                    "audit") for f in report if f.check == "small_batch"]


def _guide_findings(s: Situation, primary: Option) -> list[Finding]:
    findings = []
    if s.hardware == "multi-gpu" and s.devices is None and s.arch in ("cnn", "gan") and s.batch_size < BN_MIN_BATCH:
        findings.append(Finding("info", "give the number of devices to check whether SyncBatchNorm would see "
                                        f"{BN_MIN_BATCH} or more samples per step"))
    if s.hardware == "multi-gpu" and "batch_norm" in primary.norms and primary.label == "BatchNorm":
        findings.append(Finding("info", "under DistributedDataParallel each process normalizes only its own "
                                        f"{s.batch_size} samples; that is enough here, so plain BatchNorm needs "
                                        "no synchronization"))
    return findings


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _with_evidence(option: Option, verdicts: list[StudyVerdict]) -> Option:
    """Attach the verdicts whose claim names one of the option's norms in any spelling ("BatchNorm's" names
    ``batch_norm``)."""
    names = {_squash(n) for n in option.norms if n != "none"}
    found = tuple(v.line() for v in verdicts if any(n in _squash(v.claim) for n in names))
    return Option(option.label, option.norms, option.reason, option.references, found) if found else option


def recommend(arch: str, batch_size: int, *, task: str | None = None, hardware: str = "gpu",
              devices: int | None = None, verdicts: Iterable[StudyVerdict] = ()) -> Recommendation:
    """Apply the decision guide to a situation.

    Args:
        arch: ``"cnn"``, ``"transformer"``, ``"rnn"``, ``"gan"`` or ``"style-transfer"``.
        batch_size: samples per device per step (an int ≥ 1).
        task: one of :data:`TASKS`, or None.
        hardware: ``"cpu"``, ``"gpu"`` or ``"multi-gpu"``.
        devices: the number of devices for ``multi-gpu`` (decides whether SyncBatchNorm sees enough samples).
        verdicts: the user's study verdicts (``normlab recommend`` reads them from the lab's
            ``studies/*/result.json``); those of studies that bear on ``arch`` (:data:`STUDIES_BY_ARCH`) are
            cited, each also beside the options whose norms its claim names.

    Returns:
        A :class:`Recommendation`.

    Raises:
        ValueError: an unknown arch, task or hardware, or a batch size that is not a whole number ≥ 1.

    Examples:
        >>> r = recommend("cnn", 8, hardware="multi-gpu", devices=4)
        >>> r.primary.label, r.alternatives[0].label
        ('SyncBatchNorm', 'GroupNorm + Weight Standardization')
        >>> recommend("style-transfer", 1).primary.norms
        ('instance_norm',)
    """
    situation = Situation(arch, batch_size, task, hardware, devices)
    options, avoid = _RULES[arch](situation)
    relevant = [v for v in verdicts if v.study in STUDIES_BY_ARCH[arch]]
    options = [_with_evidence(o, relevant) for o in options]
    avoid = [_with_evidence(o, relevant) for o in avoid]
    findings = _audit_findings(situation) + _guide_findings(situation, options[0])
    return Recommendation(situation, options[0], tuple(options[1:]), tuple(avoid), tuple(findings),
                          tuple(v.line() for v in relevant))
