"""Loaded by pytest at start-up, before it imports anything to collect (``tests`` or the doctests under ``src``).

Without a CUDA device the Triton kernels' tests run on the CPU through Triton's interpreter. Triton reads
``TRITON_INTERPRET`` when it is first imported, and some of torch imports it, so the variable is set here, before
any of that can happen. Nothing else on such a machine runs Triton code.
"""

import os

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
