"""napari widgets of napari-microstructure (Qt; the algorithms live in ``core``).

- :class:`ReconstructionWidget`: the reconstruction dock widget (Plugins menu).
- :class:`PruningWidget`: the pruning-study dock widget (Plugins menu).
- :class:`PropertyWidget`: the property-prediction dock widget (Plugins menu).
- :class:`ResultsTable`, :class:`ResultsPlot`: the table and plots it docks beside itself.
- :class:`JobRunner`: runs a widget's work in worker threads (shared by all three).
"""

from ._plot import ResultsPlot
from ._table import ResultsTable
from ._worker import JobRunner
from .properties import PropertyWidget
from .pruning import PruningWidget
from .reconstruction import ReconstructionWidget

__all__ = [
    "JobRunner",
    "PropertyWidget",
    "PruningWidget",
    "ReconstructionWidget",
    "ResultsPlot",
    "ResultsTable",
]
