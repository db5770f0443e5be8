"""The fx pass: FFNs found by type and data flow, rewritten in the graph, refused when absent."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varcompress.activated.experts import ExpertCall, ExpertFFN
from varcompress.activated.fx_pass import find_ffns, rewrite_block, trace_block, traced_type
from varcompress.errors import VarcompressError
from varcompress.models.var import VARConfig
from varcompress.var_io import build_var

from .helpers import tiny_var


def test_finds_one_ffn_per_block_tiny():
    sites = find_ffns(tiny_var())
    assert [s.block for s in sites] == ["blocks.0", "blocks.1"]
    s = sites[0]
    assert (s.in_features, s.hidden, s.out_features, s.approximate) == (64, 256, 64, "tanh")


@pytest.mark.parametrize("depth", [16, 30])
def test_finds_depth_ffns_in_official_sizes_on_meta(depth):
    model = build_var(VARConfig.official(depth), "meta")
    sites = find_ffns(model)
    assert len(sites) == depth
    assert {s.hidden for s in sites} == {4 * 64 * depth}


def test_attention_stays_a_leaf_so_kv_cache_branches_are_not_baked():
    gm = trace_block(tiny_var().blocks[0])
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert "attn" in targets and not any(str(t).startswith("attn.") for t in targets)


def test_found_by_data_flow_not_names():
    class Odd(nn.Module):  # FFN under unusual names, plus a Linear->GELU pair that is not an FFN
        def __init__(self):
            super().__init__()
            self.a, self.g, self.b = nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)
            self.p, self.q = nn.Linear(8, 8), nn.GELU()

        def forward(self, x):
            return self.b(self.g(self.a(x))) + self.q(self.p(x))

    sites = find_ffns(Odd())
    assert [(s.fc1, s.act, s.fc2) for s in sites] == [("a", "g", "b")]


def test_refuses_model_without_ffn():
    model = tiny_var()
    for blk in model.blocks:
        blk.ffn.act = nn.ReLU()
    with pytest.raises(VarcompressError, match=r"no FFN \(Linear -> GELU -> Linear\) found in blocks.0"):
        find_ffns(model)
    with pytest.raises(VarcompressError, match="no FFN"):
        find_ffns(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)))


def test_refuses_hidden_dim_mismatch():
    seq = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(6, 4))  # traceable, not runnable
    with pytest.raises(VarcompressError, match="hidden dims disagree"):
        find_ffns(seq)


def test_rewrite_replaces_three_nodes_and_keeps_outputs():
    torch.manual_seed(0)
    block = tiny_var().blocks[0]

    def make(site, fc1, fc2):
        groups = torch.randperm(site.hidden).view(4, -1)
        return ExpertFFN.from_dense(fc1, fc2, groups, site.approximate)

    gm, sites = rewrite_block(block, make)
    assert len(sites) == 1
    kinds = [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"]
    assert "ExpertFFN" in kinds and "GELU" not in kinds
    assert not any(k.startswith("ffn.fc") for k in gm.state_dict())
    x, cond = torch.randn(2, 30, 64), torch.randn(2, 64)
    bias = tiny_var().attn_bias_for_masking
    with torch.no_grad():
        assert torch.allclose(gm(x, cond, bias), block(x, cond, bias, (0, 4)), atol=1e-5)


def test_plan_input_reaches_every_new_module_and_the_source_type_is_kept():
    """With plan_arg the graph takes the caller's per-call plan (default None) and hands it to the FFNs."""
    torch.manual_seed(0)
    block = tiny_var().blocks[0]
    make = lambda site, fc1, fc2: ExpertFFN.from_dense(fc1, fc2, torch.arange(site.hidden).view(4, -1),  # noqa: E731
                                                       site.approximate, top_k=1)
    gm, _ = rewrite_block(block, make, plan_arg="expert_plan")
    assert traced_type(gm) is type(block) and traced_type(block) is None
    x, cond = torch.randn(2, 30, 64), torch.randn(2, 64)
    bias = tiny_var().attn_bias_for_masking
    with torch.no_grad():
        plan = ExpertCall(routed=False)  # every row dense: the dense block
        assert torch.allclose(gm(x, cond, bias, expert_plan=plan), block(x, cond, bias, (0, 4)), atol=1e-5)
        assert list(plan.active.values()) == [4.0]
        routed = gm(x, cond, bias)  # no plan: every row routed (top-1)
    assert not torch.allclose(routed, block(x, cond, bias, (0, 4)), atol=1e-3)
