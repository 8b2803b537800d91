"""The theory of normalization as measuring tools for any model.

* :func:`sphere_stats` — normalization projects each reduced vector onto the sphere of radius √n.
* :func:`scale_invariant_parameters` — which parameters the loss sees only the direction of; their gradients
  are orthogonal to them.
* :class:`WeightNormTracker` — under SGD those weights grow, ‖w_{t+1}‖² = ‖w_t‖² + η²‖g_t‖²; with weight decay
  they settle at an equilibrium norm. :func:`weight_norm_stats` gives a model's weight norms and gains.
* :func:`fgsm`, :func:`pgd`, :func:`robust_accuracy` — adversarial vulnerability in pixel space, with a
  :class:`GradientMaskingWarning` when the accuracy curve looks wrong.

Each module's docstring states the formula it measures and the papers it comes from.
"""

from normlab.analysis.attacks import (
    GradientMaskingWarning,
    InputNormalization,
    RobustAccuracy,
    fgsm,
    pgd,
    project,
    robust_accuracy,
)
from normlab.analysis.invariance import InvarianceReport, ParameterInvariance, scale_invariant_parameters
from normlab.analysis.sphere import SphereLayerStats, SphereReport, normalized_vectors, sphere_stats
from normlab.analysis.weight_norms import (
    LayerWeightNorm,
    WeightNormEquilibrium,
    WeightNormRecord,
    WeightNormStats,
    WeightNormTracker,
    equilibrium_angular_update,
    equilibrium_norm,
    weight_norm_stats,
)

__all__ = [
    "GradientMaskingWarning",
    "InputNormalization",
    "InvarianceReport",
    "LayerWeightNorm",
    "ParameterInvariance",
    "RobustAccuracy",
    "SphereLayerStats",
    "SphereReport",
    "WeightNormEquilibrium",
    "WeightNormRecord",
    "WeightNormStats",
    "WeightNormTracker",
    "equilibrium_angular_update",
    "equilibrium_norm",
    "fgsm",
    "normalized_vectors",
    "pgd",
    "project",
    "robust_accuracy",
    "scale_invariant_parameters",
    "sphere_stats",
    "weight_norm_stats",
]
