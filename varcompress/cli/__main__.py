"""`python -m varcompress.cli ...` (what torchrun runs): the same as the `varcompress` command."""
from . import entry

entry()
