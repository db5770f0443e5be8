"""Engine options are validated with one clear error each; the fast decoder equals the eager one."""
from __future__ import annotations

import pytest
import torch

from varcompress import VarcompressError
from varcompress.engine import COMPILE_MODES, Engine, FastDecoder

from .helpers import tiny_var
from .test_generation import tiny_vae


def _var():
    return tiny_var().attach_vae(tiny_vae())


def test_cuda_graphs_on_cpu_is_a_clear_error():
    with pytest.raises(VarcompressError, match="cuda_graphs=True needs a CUDA device"):
        Engine(_var(), cuda_graphs=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(VarcompressError, match="CUDA is not available"):
        Engine(_var(), device="cuda")


def test_compile_mode_is_validated():
    with pytest.raises(VarcompressError, match="compile_mode must be one of"):
        Engine(_var(), compile=True, compile_mode="fastest")
    assert "max-autotune-no-cudagraphs" in COMPILE_MODES


def test_compile_modes_that_capture_graphs_conflict_with_cuda_graphs():
    if not torch.cuda.is_available():
        pytest.skip("the conflict is only reachable on a CUDA device")
    with pytest.raises(VarcompressError, match="captures CUDA graphs itself"):
        Engine(_var().cuda(), device="cuda", compile=True, compile_mode="reduce-overhead", cuda_graphs=True)


def test_dtype_checks():
    with pytest.raises(VarcompressError, match="float16 is not supported on CPU"):
        Engine(_var(), dtype=torch.float16)
    with pytest.raises(VarcompressError, match="dtype must be"):
        Engine(_var(), dtype=torch.int8)
    assert Engine(_var()).dtype == torch.float32  # CPU default


def test_needs_a_vae_and_a_positive_batch_and_valid_labels():
    with pytest.raises(VarcompressError, match="needs a VQVAE"):
        Engine(tiny_var())
    eng = Engine(_var())
    with pytest.raises(VarcompressError, match="batch size"):
        eng.generate(0, None)
    with pytest.raises(VarcompressError, match="labels must be in"):
        eng.generate(1, [11])


def test_unknown_blocks_are_refused():
    var = _var()
    var.blocks[1] = torch.nn.Identity()
    with pytest.raises(VarcompressError, match="does not know"):
        Engine(var)


@pytest.mark.parametrize("channels_last,fused,subpixel", [(False, True, True), (True, True, True),
                                                           (False, True, False), (False, False, True)])
def test_fast_decoder_equals_eager_decode(channels_last, fused, subpixel):
    vae = tiny_vae()
    f = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        ref = vae.fhat_to_img(f).add(1).mul(0.5)
    got = FastDecoder(vae, torch.float32, channels_last=channels_last, fused=fused, subpixel=subpixel)(f)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert next(vae.parameters()).dtype == torch.float32  # the caller's VQVAE is untouched


def test_fast_decoder_bf16_and_attention_levels():
    from varcompress.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                            patch_nums=(1, 2, 4))).eval()  # mid + lowest-level attention blocks
    f = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        ref = vae.fhat_to_img(f).add(1).mul(0.5)
    torch.testing.assert_close(FastDecoder(vae, torch.float32, channels_last=True)(f), ref, atol=1e-5, rtol=1e-5)
    got = FastDecoder(vae, torch.bfloat16)(f)
    assert got.dtype == torch.float32 and (got - ref).abs().max() < 0.05


@pytest.mark.parametrize("H,W,channels_last", [(4, 4, False), (3, 5, False), (1, 1, False), (6, 2, True)])
def test_subpixel_upsample_equals_nearest_then_conv(H, W, channels_last):
    from varcompress.engine.decode import SubpixelUpsample
    from varcompress.models.vqvae_blocks import Upsample2x

    torch.manual_seed(H * 10 + W)
    up = Upsample2x(6).eval()
    x = torch.randn(2, 6, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = up(x)
    got = SubpixelUpsample(up.conv, torch.float32, torch.device("cpu"))(x)
    assert got.shape == ref.shape == (2, 6, 2 * H, 2 * W)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
