"""The VAR multi-scale VQVAE: our own implementation, state_dict-compatible with the official file.

Inference methods reproduce the official fp32 computations (token indices exactly);
`forward` is a training pass (straight-through residual quantisation) for small testbeds.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import VarcompressError
from .quantizer import MultiScaleQuantizer
from .vqvae_blocks import Decoder, Encoder

DEFAULT_PATCH_NUMS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass
class VQVAEConfig:
    """Architecture of a VQVAE; the defaults are the released `vae_ch160v4096z32.pth`.

    `quant_resi` (Phi's residual ratio) and `beta` are not stored in checkpoints.
    """

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    share_quant_resi: int = 4
    quant_resi: float = 0.5
    beta: float = 0.25
    patch_nums: tuple[int, ...] = DEFAULT_PATCH_NUMS

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        problems = []
        if self.vocab_size < 1 or self.z_channels < 1 or self.num_res_blocks < 1 or self.share_quant_resi < 1:
            problems.append("vocab_size, z_channels, num_res_blocks and share_quant_resi must be >= 1")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            problems.append(f"ch_mult must be non-empty positive integers, got {self.ch_mult}")
        elif any((self.ch * m) % 32 for m in (1,) + self.ch_mult):
            problems.append(
                f"ch*ch_mult must be multiples of 32 (GroupNorm(32)), got ch={self.ch} ch_mult={self.ch_mult}")
        if not self.patch_nums or any(p < 1 for p in self.patch_nums):
            problems.append(f"patch_nums must be non-empty positive integers, got {self.patch_nums}")
        if problems:
            raise VarcompressError(f"invalid VQVAE config: {problems[0]}")

    @property
    def downsample_ratio(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample_ratio

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VQVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VarcompressError(f"VQVAE config: unknown field(s) {', '.join(unknown)}")
        return cls(**dict(d))


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale quantizer -> post_quant_conv -> decoder."""

    def __init__(self, cfg: VQVAEConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VQVAEConfig()
        self.cfg = cfg
        self.Cvae, self.vocab_size = cfg.z_channels, cfg.vocab_size
        self.downsample_ratio = cfg.downsample_ratio
        arch = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                    z_channels=cfg.z_channels, using_sa=cfg.using_sa, using_mid_sa=cfg.using_mid_sa)
        # Registration order matches the official module, hence the state_dict key order.
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch)
        self.quantize = MultiScaleQuantizer(cfg.vocab_size, cfg.z_channels, cfg.patch_nums,
                                            cfg.share_quant_resi, cfg.quant_resi, cfg.beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.patch_nums

    def set_patch_nums(self, pns: Sequence[int]) -> None:
        """Change the scale schedule; its length is fixed by `ema_vocab_hit_SV` (one row per scale)."""
        pns = tuple(int(p) for p in pns)
        n = self.quantize.ema_vocab_hit_SV.shape[0]
        if len(pns) != n:
            raise VarcompressError(f"patch_nums {pns} has {len(pns)} scales but this VQVAE has {n}")
        if any(p < 1 for p in pns):
            raise VarcompressError(f"patch_nums must be positive, got {pns}")
        self.quantize.patch_nums = pns
        self.cfg = dataclasses.replace(self.cfg, patch_nums=pns)

    def _check_image(self, img: torch.Tensor) -> None:
        want = self.patch_nums[-1] * self.downsample_ratio
        if img.dim() != 4 or img.shape[1] != 3 or img.shape[-2:] != (want, want):
            raise VarcompressError(
                f"expected images (B,3,{want},{want}) for patch_nums[-1]={self.patch_nums[-1]}, got {tuple(img.shape)}")

    def img_to_f(self, img: torch.Tensor) -> torch.Tensor:
        """Continuous latent before quantisation: quant_conv(encoder(img in [-1,1]))."""
        return self.quant_conv(self.encoder(img))

    @torch.no_grad()
    def img_to_idxBl(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1,1] -> token indices per scale, each (B, pn*pn) int64."""
        self._check_image(img)
        return self.quantize.f_to_idxBl(self.img_to_f(img))

    @torch.no_grad()
    def idxBl_to_var_input(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token indices -> VAR teacher-forcing input x_BLCv_wo_first_l (B, L - pn0^2, Cvae)."""
        return self.quantize.idxBl_to_var_input(idx_Bl)

    @torch.no_grad()
    def idxBl_to_img(self, idx_Bl: Sequence[torch.Tensor], same_shape: bool = True,
                     last_one: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Decode tokens to images in [-1,1]: the final image (last_one) or one per cumulative scale."""
        f_hats = self.quantize.idxBl_to_fhat(idx_Bl, same_shape=same_shape, last_one=last_one)
        if last_one:
            return self.fhat_to_img(f_hats)
        return [self.fhat_to_img(f) for f in f_hats]

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """decoder(post_quant_conv(f_hat)).clamp(-1, 1); differentiable, so wrap inference in no_grad."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Training pass: (reconstruction (unclamped), vq loss, % of codebook used in the batch)."""
        self._check_image(img)
        f_hat, vq_loss, usage = self.quantize(self.img_to_f(img))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, usage
