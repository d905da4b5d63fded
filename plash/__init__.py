"""plash: build and run layered root file systems without privileges or a daemon."""

__version__ = "0.1.0"
