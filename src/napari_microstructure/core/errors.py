"""Errors that the user can act on: each message says what was wrong and what to do."""


class MicrostructureError(ValueError):
    """Base class of the errors that napari-microstructure reports to users."""


class InputError(MicrostructureError):
    """The image or the parameters cannot be used as given."""


class WeightsError(MicrostructureError):
    """The network weights are missing, damaged or unsafe."""


class DeviceError(MicrostructureError):
    """The requested device does not exist or is not available."""


class MemoryBudgetError(MicrostructureError):
    """The requested work needs more memory than is free."""
