"""Makes the shared test models (``surgery_models``) importable from every test file here."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
