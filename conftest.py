"""Loaded by pytest at start-up, before it imports anything to collect (``tests`` or the doctests under ``src``).

Without a CUDA device the Triton kernels' tests run on the CPU through Triton's interpreter. The variable must be
set before Triton is first imported (kernels defined after an import without it fail under the interpreter), and
collecting other modules can import Triton through torch, so it is set here. Importing torch itself does not
import Triton. Nothing else on such a machine runs Triton code.
"""

import os

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
