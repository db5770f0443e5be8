"""ConvertConfig validation (one line naming the field) and serialisation."""
from __future__ import annotations

import pytest

from varcompress.activated.config import keep_counts
from varcompress.convert import ConvertConfig
from varcompress.errors import VarcompressError


@pytest.mark.parametrize("kw, field", [
    (dict(keep_ratio=0.0), "keep_ratio"),
    (dict(keep_ratio=[1.0, 1.5]), "keep_ratio"),
    (dict(top_k=9), "top_k"),
    (dict(top_k=0), "top_k"),
    (dict(experts=4, shared_experts=2, top_k=3), "top_k"),
    (dict(shared_experts=8), "shared_experts"),
    (dict(experts=0), "experts"),
    (dict(clustering="spectral"), "clustering"),
    (dict(selector="random"), "selector"),
    (dict(reconstruction="zero"), "reconstruction"),
    (dict(router="gru"), "router"),
    (dict(flops_target=1.5), "flops_target"),
    (dict(flops_target=0.8, routing="dynamic"), "flops_target"),
    (dict(tau=2.0), "tau"),
    (dict(sparse_scales=-1), "sparse_scales"),
    (dict(sparse_scales=0, keep_ratio=0.5), "keep_ratio"),
    (dict(keep_ratio=[[1.0, 0.5], [1.0]]), "keep_ratio"),
    (dict(keep_ratio=[[1.0, 0.5], 0.5]), "keep_ratio"),
    (dict(keep_ratio=[[1.0, 0.0]]), "keep_ratio"),
    (dict(keep_granularity="token"), "keep_granularity"),
])
def test_invalid_fields_name_the_field(kw, field):
    with pytest.raises(VarcompressError, match=f"convert config: {field} ") as e:
        ConvertConfig(**kw)
    assert "\n" not in str(e.value)


def test_model_checks():
    cfg = ConvertConfig(experts=6, top_k=6)
    with pytest.raises(VarcompressError, match="experts 6 does not divide the FFN width 256"):
        cfg.check_model(2, 4, 256)
    with pytest.raises(VarcompressError, match="keep_ratio per-scale list has 2 entries"):
        ConvertConfig(keep_ratio=[1.0, 0.5]).check_model(2, 4, 256)
    with pytest.raises(VarcompressError, match="top_k per-block list has 3 entries"):
        ConvertConfig(top_k=[8, 8, 8]).check_model(2, 4, 256)
    with pytest.raises(VarcompressError, match="keep_ratio per-block lists: 3, the model has 2 blocks"):
        ConvertConfig(keep_ratio=[[1.0] * 4] * 3).check_model(2, 4, 256)
    with pytest.raises(VarcompressError, match="keep_ratio per-scale list has 3 entries"):
        ConvertConfig(keep_ratio=[[1.0] * 3] * 2).check_model(2, 4, 256)


def test_round_trip_and_resolution():
    cfg = ConvertConfig(experts=4, top_k=[2, 3], shared_experts=1, keep_ratio=0.5, sparse_scales=2)
    assert ConvertConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.keep_per_scale(4) == [1.0, 1.0, 0.5, 0.5]
    assert keep_counts((1, 2, 3, 4), cfg.keep_per_scale(4)) == [1, 4, 4, 8]
    with pytest.raises(VarcompressError, match="unknown field"):
        ConvertConfig.from_dict({"experts": 4, "bogus": 1})
    per_block = ConvertConfig(keep_ratio=[[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.8, 0.3]])
    assert ConvertConfig.from_dict(per_block.to_dict()) == per_block
    assert per_block.keep_per_block(2, 4)[1] == [1.0, 1.0, 0.8, 0.3]
    assert cfg.keep_per_block(2, 4) == [[1.0, 1.0, 0.5, 0.5]] * 2
