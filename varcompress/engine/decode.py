"""Fast VQVAE decode: f_hat (B, Cvae, h, w) -> images in [0, 1].

The same modules and arithmetic as `VQVAE.fhat_to_img` (then (x + 1) / 2), run with
in-place SiLU / residual adds and buffer reuse (on CPU every fresh large tensor costs
page faults), each nearest-x2 upsample + 3x3 conv as four 2x2 convs on the small input
(`SubpixelUpsample`: the same sums, 4 instead of 9 taps per output pixel), optionally
in another dtype (bf16: oneDNN bf16 kernels on CPUs with AVX512-BF16, tensor cores on
GPUs) and memory format (channels_last). The decoder is copied (the caller's VQVAE is
never modified) unless it already has the wanted dtype, device and layout.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.vqvae_blocks import AttnBlock, ResnetBlock


def _resnet(m: ResnetBlock, x: torch.Tensor) -> torch.Tensor:
    h = m.conv1(F.silu(m.norm1(x), inplace=True))
    h = m.conv2(F.silu(m.norm2(h), inplace=True))
    return h.add_(m.nin_shortcut(x))  # eager: nin_shortcut(x) + h (same sum)


def _attn(m: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    q, k, v = m.qkv(m.norm(x)).reshape(B, 3, C, H * W).unbind(1)
    attn = F.softmax(torch.bmm(q.transpose(1, 2), k).mul_(m.w_ratio), dim=2)  # (B, HWq, HWk)
    h = torch.bmm(v, attn.transpose(1, 2))  # (B, C, HWq)
    return x + m.proj_out(h.view(B, C, H, W).contiguous(memory_format=_fmt(x)))


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


# nearest x2 then a 3-tap conv (padding 1): output row 2i+a reads input rows (i-1, i) for a=0 and
# (i, i+1) for a=1, with the taps that land on the same input row summed
_TAPS = torch.tensor([[[1., 0., 0.], [0., 1., 1.]], [[1., 1., 0.], [0., 0., 1.]]])  # (phase, 2 taps, 3 taps)


class SubpixelUpsample:
    """`Upsample2x` (nearest x2, 3x3 conv) as one 2x2 conv per output phase on the input.

    Same result up to float rounding (a weight sum w1 + w2 replaces two products), with
    16 instead of 36 multiply-adds per input pixel and channel pair: the upsampled
    tensor (4x the input) is never built. Kernels are combined in float32 from `conv`.
    """

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, device: torch.device):
        w = conv.weight.detach().float().cpu()
        k = torch.einsum("apk,oikl,bql->aboipq", _TAPS, w, _TAPS)  # (a, b, O, I, 2, 2)
        self.k = [[k[a, b].to(device=device, dtype=dtype).contiguous() for b in range(2)] for a in range(2)]
        self.bias = conv.bias.detach().to(device=device, dtype=dtype) if conv.bias is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        xp = F.pad(x, (1, 1, 1, 1))
        ph = [F.conv2d(xp[:, :, a:a + H + 1, b:b + W + 1], self.k[a][b], self.bias)
              for a in range(2) for b in range(2)]
        O = ph[0].shape[1]
        # (B, O, a, b, H, W) -> (B, O, H, a, W, b) = (B, O, 2H, 2W)
        y = torch.stack(ph, dim=2).view(B, O, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, O, 2 * H, 2 * W)
        return y.contiguous(memory_format=_fmt(x))


def _block(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, ResnetBlock):
        return _resnet(m, x)
    if isinstance(m, AttnBlock):
        return _attn(m, x)
    return m(x)


class FastDecoder:
    """Callable: f_hat -> images in [0, 1] (float32), with the chosen dtype and layout."""

    def __init__(self, vae, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 channels_last: bool = False, fused: bool = True, subpixel: bool = True):
        dev = torch.device(device) if device is not None else vae.post_quant_conv.weight.device
        self.dtype, self.device, self.channels_last, self.fused = dtype, dev, channels_last, fused
        w = vae.post_quant_conv.weight
        same = w.dtype == dtype and w.device == dev and not channels_last
        src = nn.ModuleDict({"post_quant_conv": vae.post_quant_conv, "decoder": vae.decoder})
        mods = src if same else copy.deepcopy(src).to(device=dev, dtype=dtype)
        if channels_last:
            mods = mods.to(memory_format=torch.channels_last)
        self.post, self.dec = mods["post_quant_conv"], mods["decoder"]
        self.upsample = {i: SubpixelUpsample(vae.decoder.up[i].upsample.conv, dtype, dev) if fused and subpixel
                         else self.dec.up[i].upsample for i in range(1, len(self.dec.up))}

    @torch.inference_mode()
    def __call__(self, f_hat: torch.Tensor) -> torch.Tensor:
        z = f_hat.to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        d = self.dec
        if not self.fused:
            img = d(self.post(z))
        else:
            h = d.conv_in(self.post(z))
            h = _block(d.mid.block_2, _block(d.mid.attn_1, _block(d.mid.block_1, h)))
            for i in reversed(range(len(d.up))):
                level = d.up[i]
                for j, blk in enumerate(level.block):
                    h = _block(blk, h)
                    if len(level.attn) > 0:
                        h = _block(level.attn[j], h)
                if i != 0:
                    h = self.upsample[i](h)
            img = d.conv_out(F.silu(d.norm_out(h), inplace=True))
        return img.float().clamp_(-1, 1).add_(1).mul_(0.5).contiguous()
