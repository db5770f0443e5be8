"""varcompress: activate only part of a pretrained VAR model (ActVAR-style)."""
from .errors import VarcompressError
from .loading import load
from .vae_io import load_vae
from .var_io import build_var, load_var
from .version import __version__

__all__ = ["VarcompressError", "build_var", "load", "load_var", "load_vae", "__version__"]
