"""normlab: every normalization technique on one unified core.

Activation norms (:mod:`normlab.nn`) are thin layers over one functional core (:mod:`normlab.core`); the
registry builds any of them by name (:func:`create_norm`, :func:`list_norms`).
"""

from normlab import nn
from normlab.registry import create_norm, default_num_groups, list_norms, norm_factory, register_norm

__version__ = "0.1.0"

__all__ = ["create_norm", "default_num_groups", "list_norms", "nn", "norm_factory", "register_norm"]
