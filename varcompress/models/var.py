"""The VAR transformer (next-scale prediction), official-format compatible.

`forward` is teacher forcing over all scales at once (block-causal mask);
`autoregressive_infer_cfg` generates scale by scale with a KV cache and
classifier-free guidance. Both loop over blocks through `run_blocks`, the single
place where an activated model changes how blocks are driven.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import VarcompressError
from .sampler import sample_top_k_top_p
from .var_blocks import AdaLNBeforeHead, AdaLNSelfAttn

OFFICIAL_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    vocab_size: int = 4096
    Cvae: int = 32
    num_classes: int = 1000
    patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6

    @classmethod
    def official(cls, depth: int, attn_l2_norm: bool = True) -> "VARConfig":
        """The published d16..d30 shapes: width 64*depth, one head per 64 channels."""
        return cls(depth=depth, embed_dim=64 * depth, num_heads=depth, attn_l2_norm=attn_l2_norm)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_nums"] = list(self.patch_nums)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VARConfig":
        d = dict(d)
        d.pop("extra", None)  # a field of older cards, never used
        d["patch_nums"] = tuple(d["patch_nums"])
        return cls(**d)


def level_layout(patch_nums: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale index of every token (1, L) and the block-causal additive mask (1, 1, L, L)."""
    d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, -1, 1)
    dT = d.transpose(1, 2)
    mask = torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, d.shape[1], d.shape[1])
    return dT[:, 0].contiguous(), mask


class VAR(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C, self.C, self.Cvae, self.V = cfg.embed_dim, cfg.embed_dim, cfg.Cvae, cfg.vocab_size
        self.num_classes, self.patch_nums = cfg.num_classes, tuple(cfg.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends, cur = [], 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        self.L = cur

        self.word_embed = nn.Linear(self.Cvae, C)
        self.class_emb = nn.Embedding(self.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.blocks = nn.ModuleList(
            AdaLNSelfAttn(C, C, cfg.num_heads, cfg.mlp_ratio, cfg.attn_l2_norm, cfg.norm_eps)
            for _ in range(cfg.depth)
        )
        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm_eps)
        self.head = nn.Linear(C, self.V)
        lvl_1L, mask = level_layout(self.patch_nums)
        self.register_buffer("lvl_1L", lvl_1L)
        self.register_buffer("attn_bias_for_masking", mask)
        self.vae = None  # set by `attach_vae`; not a submodule, so not in state_dict

    def attach_vae(self, vae) -> "VAR":
        """Give the model its tokenizer (needed only for generation)."""
        if vae is not None:
            if vae.Cvae != self.Cvae or vae.vocab_size != self.V:
                raise VarcompressError(
                    f"VQVAE does not match the VAR: VQVAE has V={vae.vocab_size}, Cvae={vae.Cvae}; "
                    f"VAR expects V={self.V}, Cvae={self.Cvae}")
            vae.set_patch_nums(self.patch_nums)
        object.__setattr__(self, "vae", vae)
        return self

    # ---- shared pieces -------------------------------------------------------------
    def lvl_pos(self) -> torch.Tensor:
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond_BD).float()).float()

    def run_blocks(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                   scales: tuple[int, int]) -> torch.Tensor:
        """Run every block; `scales` = (first, last+1) scale index of the rows in `x`."""
        for block in self.blocks:
            x = block(x, cond_BD, attn_bias, scales)
        return x

    # ---- teacher forcing ------------------------------------------------------------
    def embed_inputs(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor):
        """Token embeddings (B, L, C) and the class condition (B, C)."""
        B = x_BLCv_wo_first_l.shape[0]
        cond_BD = self.class_emb(label_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        return x + self.lvl_pos(), cond_BD

    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V); labels are never dropped here."""
        x, cond_BD = self.embed_inputs(label_B, x_BLCv_wo_first_l)
        x = self.run_blocks(x, cond_BD, self.attn_bias_for_masking, (0, len(self.patch_nums)))
        return self.get_logits(x, cond_BD)

    # ---- cached generation ------------------------------------------------------------
    def set_kv_caching(self, enable: bool) -> None:
        for block in self.blocks:
            block.attn.kv_caching(enable)

    @torch.no_grad()
    def autoregressive_infer_cfg(self, B: int, label_B=None, g_seed: int | None = None,
                                 cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                                 more_smooth: bool = False, return_idx: bool = False):
        """Generate B images (in [0, 1]) scale by scale; rows [labels; unconditional] for CFG."""
        return cfg_generate([self] * len(self.patch_nums), self.vae, B, label_B, g_seed, cfg, top_k, top_p,
                            more_smooth, return_idx)

    def _labels(self, B: int, label_B, rng, dev) -> torch.Tensor:
        if label_B is None:
            uniform = torch.full((self.num_classes,), 1.0 / self.num_classes, device=dev)
            return torch.multinomial(uniform, num_samples=B, replacement=True, generator=rng).reshape(B)
        if isinstance(label_B, int):
            return torch.full((B,), self.num_classes if label_B < 0 else label_B, device=dev)
        return torch.as_tensor(label_B, device=dev).long().reshape(B)


def with_uncond(var, labels: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample twice: with its label and with the unconditional one (CFG's second row)."""
    return torch.cat((labels, torch.full_like(labels, var.num_classes))), torch.cat((x, x))


@torch.no_grad()
def teacher_force_with_hooks(model: nn.Module, labels: torch.Tensor, x: torch.Tensor, handles: list,
                             batch: int = 8) -> None:
    """Teacher-force `model` over (labels, x) in batches, in eval mode, for the hooks whose `handles`
    are given (they observe the pass); the hooks are removed and the mode restored however it ends."""
    was_training = model.training
    model.eval()
    try:
        for i in range(0, labels.shape[0], batch):
            model(labels[i:i + batch], x[i:i + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def cfg_generate(drawers: list[VAR], vae, B: int, label_B=None, g_seed: int | None = None, cfg: float = 1.5,
                 top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False, return_idx: bool = False):
    """Cached CFG generation in which `drawers[si]` draws scale si (one model for a plain VAR).

    Every model runs each scale up to the last one it draws, so a model that takes over later
    first prefills the earlier scales into its KV cache (CoDe's hand-over; `prune.split`).
    """
    if vae is None:
        raise VarcompressError("generation needs a VQVAE: load_var(path, vae=load_vae(...))")
    if more_smooth:
        raise VarcompressError("more_smooth=True (Gumbel-softmax visualisation mode) is not supported")
    first, models = drawers[0], list({id(m): m for m in drawers}.values())
    last = {id(m): max(i for i, d in enumerate(drawers) if d is m) for m in models}
    dev = first.pos_1LC.device
    rng = None
    if g_seed is not None:
        rng = torch.Generator(device=dev)
        rng.manual_seed(g_seed)
    label_B = first._labels(B, label_B, rng, dev)
    quant, patch_nums, Cvae = vae.quantize, first.patch_nums, first.Cvae
    state = {}
    for m in models:
        cond_BD = m.class_emb(torch.cat((label_B, torch.full_like(label_B, m.num_classes))))
        lvl_pos = m.lvl_pos()
        x = (cond_BD.unsqueeze(1).expand(2 * B, m.first_l, -1)
             + m.pos_start.expand(2 * B, m.first_l, -1) + lvl_pos[:, :m.first_l])
        state[id(m)] = (cond_BD, lvl_pos, x)
    f_hat = state[id(first)][0].new_zeros(B, Cvae, patch_nums[-1], patch_nums[-1])
    SN, idx_list = len(patch_nums), []
    for m in models:
        m.set_kv_caching(True)
    try:
        for si, pn in enumerate(patch_nums):
            logits = None
            for m in models:
                if si <= last[id(m)]:
                    cond_BD, _, x = state[id(m)]
                    h = m.run_blocks(x, cond_BD, None, (si, si + 1))
                    if m is drawers[si]:
                        logits = m.get_logits(h, cond_BD)
            t = cfg * si / (SN - 1)
            logits = (1 + t) * logits[:B] - t * logits[B:]
            idx_Bl = sample_top_k_top_p(logits, top_k=top_k, top_p=top_p, generator=rng)
            idx_list.append(idx_Bl)
            h_BChw = quant.embedding(idx_Bl).transpose(1, 2).reshape(B, Cvae, pn, pn)
            f_hat, next_map = quant.get_next_autoregressive_input(si, SN, f_hat, h_BChw)
            if si != SN - 1:
                nxt = next_map.view(B, Cvae, -1).transpose(1, 2)
                bg, ed = first.begin_ends[si + 1]
                for m in models:
                    if si + 1 <= last[id(m)]:
                        cond_BD, lvl_pos, _ = state[id(m)]
                        state[id(m)] = (cond_BD, lvl_pos, (m.word_embed(nxt) + lvl_pos[:, bg:ed]).repeat(2, 1, 1))
    finally:
        for m in models:
            m.set_kv_caching(False)
    img = vae.fhat_to_img(f_hat).add(1).mul(0.5)
    return (img, idx_list) if return_idx else img
