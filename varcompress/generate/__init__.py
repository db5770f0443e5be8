"""Drawing from a model: `images.py` (class-conditional images in memory), `tokens.py` (token maps a
teacher draws, eager or through the engine), `files.py` (`varcompress generate`: PNGs, the FID `.npz`)."""
