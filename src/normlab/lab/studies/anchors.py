"""Published numbers the studies show beside their own, always labelled as published and never mixed into our
statistics.

* :data:`WU_HE_2018` — Group Normalization (Wu & He, ECCV 2018), Table 2 "Sensitivity to batch sizes":
  ResNet-50 ImageNet validation error (%) at 32, 16, 8, 4 and 2 images per GPU (8 GPUs). The abstract confirms the
  batch-2 gap: "GN has 10.6% lower error than its BN counterpart" (34.7 − 24.1).
* :data:`LIU_2017` — Network Slimming (Liu et al., ICCV 2017), Table 1 (CIFAR-10, VGGNet): test error of the
  baseline and of the model with 70% of its channels pruned then fine-tuned, and the parameter counts
  (20.04M → 2.30M, i.e. 88.5% of the parameters pruned).

Numbers are kept as the published text (``"24.0"``, not ``24``), so the report shows them as printed.

Examples:
    >>> WU_HE_2018.rows[0]
    ['BatchNorm', '23.6', '23.7', '24.8', '27.3', '34.7']
    >>> wu_he_series()[1].y
    [24.1, 24.2, 24.0, 24.2, 24.1]
"""
from __future__ import annotations

from .results import Anchor, Series

__all__ = ["WU_HE_2018", "WU_HE_BATCH_SIZES", "LIU_2017", "wu_he_series"]

WU_HE_BATCH_SIZES = [32, 16, 8, 4, 2]

WU_HE_2018 = Anchor(
    id="wu-he-2018",
    source="Wu & He (2018)",
    citation="Yuxin Wu and Kaiming He. Group Normalization. ECCV 2018 (arXiv:1803.08494), Table 2",
    url="https://arxiv.org/abs/1803.08494",
    setting="ResNet-50 on ImageNet, validation error (%) by batch size per GPU (8 GPUs; BN statistics per GPU); "
            "a different data set, model and scale from ours — compare the shape of the curves, not the levels",
    columns=["norm", "32", "16", "8", "4", "2"],
    rows=[["BatchNorm", "23.6", "23.7", "24.8", "27.3", "34.7"],
          ["GroupNorm", "24.1", "24.2", "24.0", "24.2", "24.1"]],
    note="published numbers, not measured by normlab",
)

LIU_2017 = Anchor(
    id="liu-2017",
    source="Liu et al. (2017)",
    citation="Zhuang Liu, Jianguo Li, Zhiqiang Shen, Gao Huang, Shoumeng Yan, Changshui Zhang. Learning Efficient "
             "Convolutional Networks through Network Slimming. ICCV 2017 (arXiv:1708.06519), Table 1",
    url="https://arxiv.org/abs/1708.06519",
    setting="VGGNet (19 layers) on full CIFAR-10 with an L1 penalty 1e-4 on BN scale factors, 160 epochs; test error "
            "(%) and parameters of the baseline and of the network with 70% of its channels pruned, fine-tuned",
    columns=["model", "test error (%)", "parameters", "parameters pruned"],
    rows=[["VGGNet baseline", "6.34", "20.04M", "—"],
          ["VGGNet, 70% channels pruned", "6.20", "2.30M", "88.5%"]],
    note="published numbers, not measured by normlab",
)


def wu_he_series() -> list[Series]:
    """Wu & He's two curves (error % vs batch size per GPU) as published plot series."""
    return [Series(f"{row[0]} (ResNet-50, ImageNet)", list(WU_HE_BATCH_SIZES), [float(v) for v in row[1:]],
                   published=True, marker="s") for row in WU_HE_2018.rows]
