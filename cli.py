"""Thin entry point: `python cli.py ...` is the same as the `varcompress` command."""
from varcompress.cli import entry

if __name__ == "__main__":
    entry()
