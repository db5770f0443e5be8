"""Which parameters train in a stage, and which relaxations are on.

Every student parameter belongs to exactly one group:
  routers    the per-FFN expert routers
  selectors  the gated token selectors
  experts    the expert weights (fc1/fc2 slices, fc2 bias); a dense model's FFN fc1/fc2
  attention  qkv / proj / biases / scale of every block's attention
  modulation the rest of each block (the adaLN projection)
  embeddings class / word / position / level embeddings
  head       the final adaLN and the vocabulary head
`all` = every group. A stage freezes everything else (requires_grad=False). The router
relaxation is on only while routers train, the selector one only while selectors train;
otherwise the forward is the hard inference path (same top_k, same keep counts).
"""
from __future__ import annotations

from torch import nn

from ..activated.experts import ExpertFFN
from ..activated.router import Router
from ..errors import VarcompressError
from ..models.var_blocks import FFN, SelfAttention
from .recipe import GROUPS
from .relax import StudentHooks

GROUP_NAMES = tuple(g for g in GROUPS if g != "all")


def param_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    owner: dict[int, str] = {}

    def claim(group: str, module: nn.Module | None) -> None:
        if module is not None:
            for p in module.parameters():
                owner.setdefault(id(p), group)

    for blk in model.blocks:
        for m in blk.modules():
            if isinstance(m, Router):
                claim("routers", m)
        claim("selectors", getattr(blk, "selector", None))
        for m in blk.modules():
            if isinstance(m, (ExpertFFN, FFN)):  # a dense FFN (pruned baselines) is the experts' counterpart
                claim("experts", m)
            elif isinstance(m, SelfAttention):
                claim("attention", m)
        claim("modulation", blk)
    claim("head", model.head_nm)
    claim("head", model.head)
    claim("embeddings", model)
    groups: dict[str, list] = {g: [] for g in GROUP_NAMES}
    for name, p in model.named_parameters():
        groups[owner[id(p)]].append((name, p))
    return groups


def stage_groups(stage: dict) -> list[str]:
    return list(GROUP_NAMES) if "all" in stage["train"] else list(dict.fromkeys(stage["train"]))


def apply_stage(student: nn.Module, hooks: StudentHooks, stage: dict, index: int) -> list[nn.Parameter]:
    """Freeze all but the stage's groups, set relaxations and captures; return the trainable params."""
    names = stage_groups(stage)
    groups = param_groups(student)
    for p in student.parameters():
        p.requires_grad_(False)
    params = [p for g in names for _, p in groups[g]]
    if not params:
        raise VarcompressError(f"stages[{index}].train: {', '.join(names)} hold no parameters in this student")
    for p in params:
        p.requires_grad_(True)
    L, relax = stage["losses"], stage["relax"]
    w = {k: v["weight"] > 0 for k, v in L.items()}
    hooks.configure(router=relax["router"] if "routers" in names else "off",
                    selector=relax["selector"] if "selectors" in names else "off",
                    temperature=relax["temperature"],
                    blocks=w["feature"] or w["selector"], ffn_in=w["router"],
                    scores=w["balance"] or w["budget"], gates=w["budget"])
    return params
