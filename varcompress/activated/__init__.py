"""The activated model that `convert` produces: a VAR whose blocks are `GatedBlock`s.

`config.py` (ConvertConfig), `router.py` / `selector.py` (per-block expert router and token
selector), `token_path.py` (the one token path), `experts.py` (ExpertFFN, ExpertCall),
`gated_block.py`, `model.py` (ActivatedVAR), `fx_pass.py` (the torch.fx FFN swap),
`clustering.py` + `build.py` (one block built from a dense one: fitted on teacher captures, or an
empty skeleton that `formats.activated` fills from disk).
"""
