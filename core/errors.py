"""Typed errors raised by core/; pages catch them and show their message as one sentence."""


class DistilleryError(Exception):
    """Base class: the message is a complete, user-facing sentence."""


class DataError(DistilleryError, ValueError):
    """An uploaded or generated dataset cannot be used (which file, column, row; what to do)."""


class ConfigError(DistilleryError, ValueError):
    """A model, training or distillation configuration is invalid."""


class TrainingDiverged(DistilleryError, RuntimeError):
    """The loss became NaN or infinite; the run ends with this message."""


class TrainingCancelled(DistilleryError):
    """The run was cancelled through its cancel event."""


class StoreError(DistilleryError):
    """A database operation failed; the message says what and what to do."""
