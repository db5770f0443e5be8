"""The version of varcompress (read by setuptools and written into every model card)."""
__version__ = "0.1.0"
