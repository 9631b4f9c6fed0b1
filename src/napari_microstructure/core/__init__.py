"""The computational core of napari-microstructure: numpy and torch only, no napari or Qt."""
