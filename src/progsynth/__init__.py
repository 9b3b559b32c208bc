"""progsynth: deep learning as program synthesis.

Everything that learns is a parametric lens (``progsynth.core``); everything that looks at what was
learned reads a finished run (``progsynth.interp``, ``progsynth.slt``, ``progsynth.search``).
"""

from progsynth.errors import ProgsynthError

__version__ = "0.1.0"
__all__ = ["ProgsynthError", "__version__"]
