"""The model directories varcompress writes, each read back exactly: `activated.py` (convert,
distill), `pruned.py` (prune), `export.py` (export). `loading.py` tells them apart."""
