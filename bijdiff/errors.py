"""Errors a user can fix: the application prints their message and exits non-zero, no traceback."""


class ConfigError(ValueError):
    """An impossible or unknown configuration value; the message names the key and what to change."""


class DataError(RuntimeError):
    """A data file or source is missing, empty or unreadable; the message says what to change."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was not written by bijdiff."""


class NotInvertibleError(RuntimeError):
    """Raised when an inverse is asked of a stack that holds non-invertible layers."""


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf losses more often than ``optim.max_nonfinite_steps`` allows."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, NotInvertibleError, NonFiniteLossError)
