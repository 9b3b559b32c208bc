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


class ResourceError(ProgsynthError):
    """A request would need more memory than allowed; the message gives the size it would need and
    the option that shrinks it. Raised before any work starts."""


class RunWarning(UserWarning):
    """Something in a run directory was skipped (a torn last line of an append-only file)."""


def os_error(error: OSError, action: str, path: object = None) -> RunError:
    """The one-line RunError for an operating-system error while ``action`` (e.g. 'write') a path:
    names the path and the cause (no space left, read-only file system, name too long, not a
    directory, ...), and says that the run stays resumable where that applies."""
    import errno

    where = getattr(error, "filename", None) or path
    shown = str(where)
    if len(shown) > 120:
        shown = shown[:60] + "…" + shown[-40:]
    reason = error.strerror or str(error)
    advice = {errno.ENOSPC: "; free some space, then resume (nothing written so far is lost)",
              errno.EDQUOT: "; free some space, then resume (nothing written so far is lost)",
              errno.EROFS: "; write somewhere writable (nothing was changed)",
              errno.ENAMETOOLONG: "; choose a shorter path",
              errno.EACCES: "; check the permissions",
              errno.ENOTDIR: "; a part of the path is a file, not a directory"}.get(error.errno, "")
    return RunError(f"cannot {action} {shown!r}: {reason}{advice}")
