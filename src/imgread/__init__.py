"""imgread: measure how fast images are read from disk and decoded in Python."""

__version__ = "0.1.0"
