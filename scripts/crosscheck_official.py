"""Cross-check varcompress against the official VAR code on random weights, both attention variants.

Usage: python scripts/crosscheck_official.py PATH_TO_CLONE_OF_FoundationVision_VAR
The official code is imported from the user's own clone at run time; none of it is
part of varcompress. `huggingface_hub` is only needed for a mixin the check never
uses, so a stand-in is provided when it is not installed.
"""
import sys
import tempfile
import types

import torch

if len(sys.argv) != 2:
    sys.exit(__doc__)
sys.path.insert(0, sys.argv[1])
try:
    import huggingface_hub  # noqa: F401
except ImportError:
    stub = types.ModuleType("huggingface_hub")
    stub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
    sys.modules["huggingface_hub"] = stub
torch.set_num_threads(1)
TMP = tempfile.mkdtemp()
from models.vqvae import VQVAE as OffVQVAE  # noqa: E402  (the official code)
from models.var import VAR as OffVAR  # noqa: E402
import varcompress  # noqa: E402
from varcompress.checkpoint import save_state_dict  # noqa: E402
from varcompress.vae_io import load_vae  # noqa: E402


def perturb(m, seed):
    """Move every weight off its initial value so every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.3 if "scale_mul" in n else 0.05))


def check(l2, pns, depth, C, H):
    torch.manual_seed(0)
    vae = OffVQVAE(vocab_size=256, z_channels=32, ch=32, test_mode=True, v_patch_nums=pns)
    perturb(vae, 1)
    var = OffVAR(vae_local=vae, num_classes=10, depth=depth, embed_dim=C, num_heads=H, attn_l2_norm=l2,
                 cond_drop_rate=0.0, patch_nums=pns, flash_if_available=False, fused_if_available=False).eval()
    var.init_weights()
    perturb(var, 2)
    save_state_dict(vae.state_dict(), f"{TMP}/vae.pth")
    save_state_dict(var.state_dict(), f"{TMP}/var.pth")
    ours_vae = load_vae(f"{TMP}/vae.pth", patch_nums=pns)
    ours = varcompress.load_var(f"{TMP}/var.pth", vae=ours_vae, num_heads=H)
    img = torch.rand(2, 3, pns[-1] * 16, pns[-1] * 16) * 2 - 1
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        idx_o, idx_u = vae.img_to_idxBl(img), ours_vae.img_to_idxBl(img)
        x_o, x_u = vae.quantize.idxBl_to_var_input(idx_o), ours_vae.idxBl_to_var_input(idx_u)
        lo, lu = var(labels, x_o), ours(labels, x_u)
    tok_eq = all(torch.equal(a, b) for a, b in zip(idx_o, idx_u))
    res = {}
    for name, kw in (("greedy", dict(top_k=1, top_p=0.0)), ("topk_topp", dict(top_k=50, top_p=0.9))):
        io = var.autoregressive_infer_cfg(B=2, label_B=labels, g_seed=0, cfg=1.5, more_smooth=False, **kw)
        iu = ours.autoregressive_infer_cfg(B=2, label_B=labels, g_seed=0, cfg=1.5, **kw)
        res[name] = (io - iu).abs().max().item()
    print(f"attn_l2_norm={l2} patch_nums={pns} depth={depth} C={C}: tokens equal {tok_eq}, "
          f"x_in max|d| {(x_o - x_u).abs().max().item():.2e}, logits max|d| {(lo - lu).abs().max().item():.2e}, "
          f"image max|d| greedy {res['greedy']:.2e}, top-k/top-p sampled {res['topk_topp']:.2e}")


for l2 in (False, True):
    for pns, depth, C, H in (((1, 2, 3, 4, 5, 6, 8), 3, 192, 3), ((1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 2, 128, 2)):
        check(l2, pns, depth, C, H)
