"""The one exception family progsynth raises for bad input.

Every error names the offending value (lens, parameter, option, file) and what was expected, so a
user never has to read a stack trace from deep inside torch to find out what went wrong.
"""


class ProgsynthError(Exception):
    """Base class of every error progsynth raises on purpose."""


class LensTypeError(ProgsynthError):
    """Two lenses were composed whose boundary types do not match, or a lens got the wrong kind of data."""


class NonFiniteError(ProgsynthError):
    """A NaN or infinity reached a place (an optimizer, a loss) that would silently propagate it."""


class UnsupportedOptionError(ProgsynthError):
    """An option or hyper-parameter that progsynth does not support was requested."""


class ConfigError(ProgsynthError):
    """A configuration value is out of range or of the wrong kind."""


class RunError(ProgsynthError):
    """A run directory or checkpoint is missing, incomplete or corrupted."""


class NotApplicableError(ProgsynthError):
    """An analysis was asked of a run it does not apply to (e.g. Fourier programs of a parity task)."""
