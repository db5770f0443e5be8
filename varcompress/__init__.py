"""varcompress: activate only part of a pretrained VAR model (ActVAR-style)."""
__version__ = "0.1.0"

from .errors import VarcompressError  # noqa: E402
from .loading import load  # noqa: E402
from .var_io import build_var, load_var  # noqa: E402


def load_vae(path, patch_nums=None):
    """Load an official-format VQVAE (`vae_ch160v4096z32.pth`)."""
    from .vae_io import load_vae as _load_vae

    return _load_vae(path, patch_nums=patch_nums)


__all__ = ["VarcompressError", "build_var", "load", "load_var", "load_vae", "__version__"]
