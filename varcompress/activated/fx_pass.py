"""torch.fx pass: find every FFN (Linear -> GELU -> Linear) in a block's graph and swap it.

Blocks are traced with a tracer that keeps attention modules (anything with a
`kv_caching` method) as leaves, so the KV-cache branches are not baked into the graph,
and with `scales` made concrete (None: dense blocks ignore it). FFNs are found by
module type and data flow only: a Linear whose single user is a GELU whose single
user is a Linear consuming it. Tracing never touches tensor data, so it works on
models built on the meta device.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import fx, nn

from ..errors import VarcompressError

_GELU_FNS = (F.gelu,)


@dataclass(frozen=True)
class FFNSite:
    """One FFN found in one traced module."""
    block: str            # qualified name of the traced module in the model ('blocks.3', or '')
    index: int            # position of that module among the traced ones
    fc1: str              # qualified names inside the traced module
    act: str
    fc2: str
    in_features: int
    hidden: int
    out_features: int
    approximate: str      # GELU variant: 'none' or 'tanh'


class BlockTracer(fx.Tracer):
    """Default leaves (torch.nn layers) plus every module that manages a KV cache."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if callable(getattr(m, "kv_caching", None)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace_block(block: nn.Module) -> fx.GraphModule:
    """Symbolically trace one block; `scales` (if the block takes it) is specialised to None."""
    params = inspect.signature(block.forward).parameters
    concrete = {"scales": None} if "scales" in params else None
    tracer = BlockTracer()
    try:
        graph = tracer.trace(block, concrete_args=concrete)
    except Exception as e:  # noqa: BLE001 - any trace failure is one user-facing line
        raise VarcompressError(f"cannot trace {type(block).__name__} with torch.fx: {str(e).splitlines()[0][:160]}") from None
    gm = fx.GraphModule(tracer.root, graph, type(block).__name__)
    gm.meta["traced_type"] = type(block)
    return gm


def traced_type(module: nn.Module) -> type | None:
    """The class of the module a `trace_block` graph was traced from (None: not such a graph)."""
    meta = getattr(module, "meta", None) if isinstance(module, fx.GraphModule) else None
    return meta.get("traced_type") if isinstance(meta, dict) else None


def traced_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the pass traces: a VAR's blocks (the units `run_blocks` drives), else the model."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
        return [(f"blocks.{i}", b) for i, b in enumerate(blocks)]
    return [("", model)]


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def _gelu_variant(gm: fx.GraphModule, node: fx.Node) -> str | None:
    m = _module(gm, node)
    if isinstance(m, nn.GELU):
        return m.approximate
    if node.op == "call_function" and node.target in _GELU_FNS:
        return node.kwargs.get("approximate", "none")
    return None


def match_ffns(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node, fx.Node, str]]:
    """(fc1, act, fc2, approximate) node triples of Linear -> GELU -> Linear chains."""
    found = []
    for n1 in gm.graph.nodes:
        if not isinstance(_module(gm, n1), nn.Linear) or len(n1.users) != 1:
            continue
        act = next(iter(n1.users))
        approx = _gelu_variant(gm, act)
        if approx is None or act.args[0] is not n1 or len(act.users) != 1:
            continue
        n3 = next(iter(act.users))
        if not isinstance(_module(gm, n3), nn.Linear) or n3.args[0] is not act or len(n3.args) != 1 or n3.kwargs:
            continue
        found.append((n1, act, n3, approx))
    return found


def _site(gm, prefix, index, n1, act, n3, approx) -> FFNSite:
    fc1, fc2 = gm.get_submodule(n1.target), gm.get_submodule(n3.target)
    where = f"{prefix or type(gm).__name__}: {n1.target} -> {n3.target}"
    if fc1.out_features != fc2.in_features:
        raise VarcompressError(f"FFN hidden dims disagree in {where} ({fc1.out_features} vs {fc2.in_features})")
    if fc1.bias is None or fc2.bias is None:
        raise VarcompressError(f"FFN without biases is not supported ({where})")
    act_name = act.target if act.op == "call_module" else str(act.name)
    return FFNSite(prefix, index, n1.target, act_name, n3.target, fc1.in_features, fc1.out_features,
                   fc2.out_features, approx)


def find_ffns(model: nn.Module) -> list[FFNSite]:
    """Every FFN of the model (one per VAR block); refuses a model where a unit has none."""
    sites = []
    for i, (prefix, unit) in enumerate(traced_units(model)):
        gm = trace_block(unit)
        found = [_site(gm, prefix, i, *m) for m in match_ffns(gm)]
        if not found:
            raise VarcompressError(f"no FFN (Linear -> GELU -> Linear) found in {prefix or type(model).__name__}")
        sites.extend(found)
    return sites


def rewrite_block(block: nn.Module, make_module: Callable[[FFNSite, nn.Linear, nn.Linear], nn.Module],
                  prefix: str = "", index: int = 0,
                  plan_arg: str | None = None) -> tuple[fx.GraphModule, list[FFNSite]]:
    """Trace `block` and replace each FFN's three nodes by one call to `make_module(site, fc1, fc2)`.

    The new module takes the FFN's place in the module tree (the FFN's parent name when
    fc1/act/fc2 share a parent, e.g. `ffn`; else `ffn_experts{i}`); fc1/fc2 leave the graph.
    With `plan_arg`, the graph gains a last input of that name (default None) that every new
    module receives as its second argument: the caller's per-call plan for the FFNs.
    """
    gm = trace_block(block)
    matches = match_ffns(gm)
    if not matches:
        raise VarcompressError(f"no FFN (Linear -> GELU -> Linear) found in {prefix or type(block).__name__}")
    extra: tuple = ()
    if plan_arg is not None:
        last = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
        with gm.graph.inserting_after(last):
            extra = (gm.graph.placeholder(plan_arg, default_value=None),)
    sites, pending = [], []
    for j, (n1, act, n3, approx) in enumerate(matches):
        site = _site(gm, prefix, index, n1, act, n3, approx)
        new_mod = make_module(site, gm.get_submodule(n1.target), gm.get_submodule(n3.target))
        with gm.graph.inserting_after(n3):
            new = gm.graph.create_node("call_module", f"_pending_ffn_{j}", (n1.args[0],) + extra, {})
        n3.replace_all_uses_with(new)
        for n in (n3, act, n1):
            gm.graph.erase_node(n)
        sites.append(site)
        pending.append((new, new_mod, site))
    gm.delete_all_unused_submodules()
    for j, (node, mod, site) in enumerate(pending):
        name = _free_name(gm, site, j)
        gm.add_submodule(name, mod)
        node.target = name
    gm.graph.lint()
    gm.recompile()
    return gm, sites


def _free_name(gm: fx.GraphModule, site: FFNSite, j: int) -> str:
    parents = {s.rpartition(".")[0] for s in (site.fc1, site.fc2) + ((site.act,) if "." in site.act else ())}
    if len(parents) == 1:
        parent = parents.pop()
        if parent:
            try:
                gm.get_submodule(parent)
            except AttributeError:
                return parent
    return f"ffn_experts{j}"


def attention_with_kv_rows(attn: nn.Module, x, attn_bias, kv_rows):
    """The attention `attn` with queries from rows x and keys/values from rows kv_rows."""
    (q,) = attn.project(x, "q")
    k, v = attn.project(kv_rows, "kv")
    return attn.attend(q, k, v, attn_bias)


def split_attention_rows(gm: fx.GraphModule, kv_arg: str) -> None:
    """Give the block's attention keys and values from other rows than its queries, in place.

    The graph gains an input `kv_arg` (rows (B, Lk, C); the caller must pass it): they pass
    through copies of the nodes that lead from the block input to the attention (LN, adaLN
    modulation) and the attention takes its K/V from them, its queries still from the block
    input. A gated block passes every token of its scales there, so the tokens it skips still
    write K/V.
    """
    attns = [n for n in gm.graph.nodes
             if n.op == "call_module" and callable(getattr(gm.get_submodule(n.target), "kv_caching", None))]
    if len(attns) != 1:
        raise VarcompressError(f"skipped_kv 'computed' needs exactly one attention in the block, found {len(attns)}")
    node = attns[0]
    attn = gm.get_submodule(node.target)
    if not all(callable(getattr(attn, m, None)) for m in ("project", "attend")):
        raise VarcompressError(f"skipped_kv 'computed' needs an attention with project() and attend() "
                               f"(like models.var_blocks.SelfAttention), got {type(attn).__name__}")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    x, h = placeholders[0], node.args[0]
    from_x, upstream, todo = {x}, set(), [h]
    for n in gm.graph.nodes:
        if any(a in from_x for a in n.all_input_nodes):
            from_x.add(n)
    if h not in from_x:
        raise VarcompressError("skipped_kv 'computed': the attention's input does not come from the block input")
    while todo:
        n = todo.pop()
        if n not in upstream:
            upstream.add(n)
            todo.extend(n.all_input_nodes)
    with gm.graph.inserting_after(placeholders[-1]):
        kv = gm.graph.placeholder(kv_arg, default_value=None)  # after defaulted inputs; always passed
    env = {x: kv}
    with gm.graph.inserting_before(node):
        for n in [n for n in gm.graph.nodes if n in from_x and n in upstream and n is not x]:
            env[n] = gm.graph.node_copy(n, lambda a: env.get(a, a))
        module = gm.graph.get_attr(node.target)
        new = gm.graph.call_function(attention_with_kv_rows, (module, *node.args),
                                     {**node.kwargs, "kv_rows": env[h]})
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
