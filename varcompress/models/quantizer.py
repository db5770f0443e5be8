"""Multi-scale residual vector quantizer of the VAR VQVAE (official key layout and arithmetic).

Scale si quantises the area-downsampled residual to `patch_nums[si]`^2 tokens, upsamples
their codes bicubically to the full latent size, refines them with a shared conv `Phi`,
and adds them to the running reconstruction `f_hat`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Phi(nn.Conv2d):
    """Phi(h) = (1-r)*h + r*conv3x3(h): a residual refinement of upsampled codes."""

    def __init__(self, channels: int, resi_ratio: float) -> None:
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul_(self.resi_ratio)


def phi_ticks(k: int) -> np.ndarray:
    """Positions in [0,1] of the K shared Phis (the official choice: 1/3 margins for K=4)."""
    return np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)


def phi_index(si: int, num_scales: int, k: int) -> int:
    """Index of the Phi used at scale si: nearest tick to si/(SN-1), numpy argmin (first on ties)."""
    if k == 1:
        return 0
    at = si / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(phi_ticks(k) - at)).item())


class SharedPhis(nn.Module):
    """K Phis shared across scales; keys `qresi_ls.{k}` (K>=2) or `qresi` (K=1), as in the official file."""

    def __init__(self, channels: int, k: int, resi_ratio: float) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"share_quant_resi must be >= 1, got {k}")
        self.k = k
        if k == 1:
            self.qresi = Phi(channels, resi_ratio)
        else:
            self.qresi_ls = nn.ModuleList([Phi(channels, resi_ratio) for _ in range(k)])

    def for_scale(self, si: int, num_scales: int) -> Phi:
        return self.qresi if self.k == 1 else self.qresi_ls[phi_index(si, num_scales, self.k)]


def bicubic_to(h: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(h, size=(size, size), mode="bicubic")


def area_to(f: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(f, size=(size, size), mode="area")


class MultiScaleQuantizer(nn.Module):
    """Codebook `embedding` (V, z), shared Phis `quant_resi`, and `ema_vocab_hit_SV` (SN, V)."""

    def __init__(self, vocab_size: int, z_channels: int, patch_nums: Sequence[int],
                 share_quant_resi: int = 4, quant_resi: float = 0.5, beta: float = 0.25) -> None:
        super().__init__()
        self.vocab_size, self.Cvae, self.beta = vocab_size, z_channels, beta
        self.patch_nums: tuple[int, ...] = tuple(int(p) for p in patch_nums)
        # Registration order gives the official state_dict order: buffer, quant_resi, embedding.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.quant_resi = SharedPhis(z_channels, share_quant_resi, quant_resi)
        self.embedding = nn.Embedding(vocab_size, z_channels)
        self.record_hit = 0

    def phi(self, si: int, num_scales: int | None = None) -> Phi:
        return self.quant_resi.for_scale(si, num_scales or len(self.patch_nums))

    def _codes(self, idx: torch.Tensor, pn: int) -> torch.Tensor:
        """(B, pn*pn) or (B*pn*pn,) indices -> (B, C, pn, pn) codes (a channels-last view, as official)."""
        B = idx.numel() // (pn * pn)
        return self.embedding(idx.reshape(B, pn, pn)).permute(0, 3, 1, 2)

    def _nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v ||z - E_v||^2 computed exactly as the official code so near-ties match."""
        E = self.embedding.weight.detach()
        d = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(E.square(), dim=1, keepdim=False)
        d.addmm_(z_NC, E.T, alpha=-2, beta=1)
        return torch.argmin(d, dim=1)

    def _scale_step(self, f_rest: torch.Tensor, si: int, pn: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise the residual at scale si: returns (indices (B*pn*pn,), Phi(upsampled codes))."""
        B, C, H, W = f_rest.shape
        SN = len(self.patch_nums)
        last = si == SN - 1
        z = f_rest if last else area_to(f_rest, pn)
        idx = self._nearest(z.permute(0, 2, 3, 1).reshape(-1, C))
        h = self._codes(idx, pn)
        h = h.contiguous() if last else bicubic_to(h, H).contiguous()
        return idx, self.phi(si, SN)(h)

    def _check_latent(self, f: torch.Tensor) -> None:
        H, W = f.shape[-2:]
        if H != W or H != self.patch_nums[-1]:
            raise ValueError(f"latent is {H}x{W} but patch_nums[-1] is {self.patch_nums[-1]}")

    @torch.no_grad()
    def f_to_idxBl(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Latent (B, C, pn_last, pn_last) -> list of (B, pn*pn) token indices, one per scale."""
        self._check_latent(f)
        B = f.shape[0]
        f_rest = f.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        out = []
        for si, pn in enumerate(self.patch_nums):
            idx, h = self._scale_step(f_rest, si, pn)
            f_hat.add_(h)
            f_rest.sub_(h)
            out.append(idx.reshape(B, pn * pn))
        return out

    @torch.no_grad()
    def idxBl_to_var_input(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of VAR: area-downsampled cumulative f_hat of scales 1.. (B, L-first, C)."""
        pns, SN, C = self.patch_nums, len(self.patch_nums), self.Cvae
        B, HW = idx_Bl[0].shape[0], self.patch_nums[-1]
        f_hat = torch.zeros(B, C, HW, HW, dtype=torch.float32, device=idx_Bl[0].device)
        nexts = []
        for si in range(SN - 1):
            f_hat.add_(self.phi(si, SN)(bicubic_to(self._codes(idx_Bl[si], pns[si]), HW)))
            nexts.append(area_to(f_hat, pns[si + 1]).view(B, C, -1).transpose(1, 2))
        if not nexts:
            return f_hat.new_zeros(B, 0, C)
        return torch.cat(nexts, dim=1)

    @torch.no_grad()
    def idxBl_to_fhat(self, idx_Bl: Sequence[torch.Tensor], same_shape: bool = True,
                      last_one: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Cumulative f_hat after each scale (or only the final one with last_one=True).

        same_shape=True accumulates at the full latent size; False keeps each scale's own
        size (the running f_hat is bicubically upsampled from one scale to the next).
        """
        SN, HW = len(self.patch_nums), self.patch_nums[-1]
        B = idx_Bl[0].shape[0]
        codes = [self._codes(idx, round(idx.shape[1] ** 0.5)) for idx in idx_Bl]
        outs: list[torch.Tensor] = []
        if same_shape:
            f_hat = torch.zeros(B, self.Cvae, HW, HW, dtype=torch.float32, device=codes[0].device)
            for si, h in enumerate(codes):
                if si < SN - 1:
                    h = bicubic_to(h, HW)
                f_hat.add_(self.phi(si, SN)(h))
                if not last_one:
                    outs.append(f_hat.clone())
        else:
            f_hat = codes[0].new_zeros(B, self.Cvae, self.patch_nums[0], self.patch_nums[0])
            for si, pn in enumerate(self.patch_nums):
                f_hat = bicubic_to(f_hat, pn)
                f_hat.add_(self.phi(si, SN)(codes[si]))
                if not last_one:
                    outs.append(f_hat)
        return f_hat if last_one else outs

    def get_next_autoregressive_input(self, si: int, SN: int, f_hat: torch.Tensor,
                                      h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampler step: add scale si's codes to f_hat (in place); return (f_hat, next-scale input map)."""
        HW = self.patch_nums[-1]
        if si != SN - 1:
            f_hat.add_(self.phi(si, SN)(bicubic_to(h_BChw, HW)))
            return f_hat, area_to(f_hat, self.patch_nums[si + 1])
        f_hat.add_(self.phi(si, SN)(h_BChw))
        return f_hat, f_hat

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Training quantisation: (straight-through f_hat, vq loss, % of the codebook hit in this batch)."""
        self._check_latent(f)
        f = f.float()
        f_no_grad = f.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        SN = len(self.patch_nums)
        loss = f.new_zeros(())
        hits = torch.zeros(self.vocab_size, device=f.device)
        for si, pn in enumerate(self.patch_nums):
            idx, h = self._scale_step(f_rest, si, pn)
            f_hat = f_hat + h  # keeps the graph to the codebook and the Phis
            f_rest = f_rest - h.detach()
            hit = idx.bincount(minlength=self.vocab_size).float()
            hits.add_(hit)
            if self.training:
                self._record_hits(si, hit)
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_no_grad)
        loss = loss / SN
        if self.training:
            self.record_hit += 1
        f_hat_ste = (f_hat.detach() - f_no_grad) + f  # value of f_hat, gradient of f
        usage = (hits > 0).float().mean().item() * 100.0
        return f_hat_ste, loss, usage

    @torch.no_grad()
    def _record_hits(self, si: int, hit: torch.Tensor) -> None:
        """EMA of per-scale code hits (training statistics only; never used at inference)."""
        buf = self.ema_vocab_hit_SV[si]
        if self.record_hit == 0:
            buf.copy_(hit)
        else:
            m = 0.9 if self.record_hit < 100 else 0.99
            buf.mul_(m).add_(hit, alpha=1 - m)
