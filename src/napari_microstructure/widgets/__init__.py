"""napari widgets of napari-microstructure (Qt; the algorithms live in ``core``).

- :class:`ReconstructionWidget`: the reconstruction dock widget (Plugins menu).
- :class:`PropertyWidget`: the property-prediction dock widget (Plugins menu).
- :class:`ResultsTable`, :class:`ResultsPlot`: the table and plots it docks beside itself.
"""

from ._plot import ResultsPlot
from ._table import ResultsTable
from .properties import PropertyWidget
from .reconstruction import ReconstructionWidget

__all__ = ["PropertyWidget", "ReconstructionWidget", "ResultsPlot", "ResultsTable"]
