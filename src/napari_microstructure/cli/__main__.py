"""``python -m napari_microstructure.cli``: the same as the ``napari-microstructure`` command."""

import sys

from . import main

sys.exit(main())
