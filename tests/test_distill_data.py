"""Distillation data: batches as a pure function of (seed, step); shard caches for teacher draws and image folders."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from varcompress.dist import Dist
from varcompress.distill import data as D
from varcompress.distill.api import _on_main
from varcompress.distill.recipe import parse_recipe
from varcompress.distill.setup import load_data, load_teacher_for
from varcompress.errors import VarcompressError

from .test_distill_common import tiny_recipe, tiny_teacher  # noqa: F401  (fixture)


def test_batches_are_a_pure_function_of_seed_and_step():
    n, b = 10, 4
    a = torch.cat([D.batch_indices(3, s, b, n) for s in range(5)])  # 20 = two epochs
    assert torch.equal(a, torch.cat([D.batch_indices(3, s, b, n) for s in range(5)]))
    assert sorted(a[:10].tolist()) == list(range(10)) and sorted(a[10:].tolist()) == list(range(10))
    assert not torch.equal(a[:10], a[10:]) and not torch.equal(a, torch.cat([D.batch_indices(4, s, b, n) for s in range(5)]))
    assert len(D.batch_indices(0, 0, 25, 10)) == 25  # batch larger than the set
    data = D.TokenSet(torch.arange(10) % 3, torch.arange(10)[:, None].expand(10, 5).clone())
    lab, idx = D.global_batch(data, 0, 7, 6, 0.5, num_classes=3)
    assert torch.equal(idx[:, 0] % 3, torch.where(lab == 3, idx[:, 0] % 3, lab)) and (lab == 3).any()


def setup_run(recipe):
    r = parse_recipe(recipe)
    return r, load_teacher_for(r, torch.device("cpu"))


def test_teacher_cache_is_reused_and_resumes_missing_shards(tiny_teacher, tmp_path, monkeypatch):
    r, t = setup_run(tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache"))
    data, held = load_data(r, t, Dist(), _on_main)
    assert len(data) == 48 and data.idx.shape == (48, t.var.L) and held is None
    assert torch.equal(data.labels, torch.arange(48) % 10)
    (cache_dir,) = (tmp_path / "cache").iterdir()
    (cache_dir / "manifest.json").unlink()
    (cache_dir / "shard_00001.safetensors").unlink()  # as if killed while drawing shard 1
    calls, orig = [], D.draw_token_maps
    monkeypatch.setattr(D, "draw_token_maps", lambda *a, **k: calls.append(len(a[1])) or orig(*a, **k))
    again, _ = load_data(r, t, Dist(), _on_main)
    assert calls == [16] and torch.equal(again.idx, data.idx)  # only the missing shard was drawn
    load_data(r, t, Dist(), _on_main)
    assert calls == [16]  # complete cache: nothing drawn
    rec = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache")
    rec["data"]["cfg"] = 3.0
    load_data(parse_recipe(rec), t, Dist(), _on_main)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # other sampling: another cache entry


def test_image_folder_source(tiny_teacher, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            arr = (torch.rand(10, 13, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
    rec = tiny_recipe(tiny_teacher, tmp_path / "run", tmp_path / "cache")
    rec["data"] = {"source": "images", "path": str(tmp_path / "imgs"), "count": None,
                   "cache_dir": str(tmp_path / "cache"), "shard_size": 4}
    r, t = setup_run(rec)
    data, _ = load_data(r, t, Dist(), _on_main)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.idx.shape == (6, t.var.L)
    img = torch.stack([D.load_image(tmp_path / "imgs" / "cat" / "0.png", 8)]) * 2 - 1
    assert torch.equal(torch.cat(t.vae.img_to_idxBl(img), 1)[0], data.idx[0])
    monkeypatch.setattr(D, "encode_image_shards", lambda *a, **k: pytest.fail("re-encoded a cached folder"))
    load_data(r, t, Dist(), _on_main)
    rec["data"]["path"] = str(tmp_path / "nothing")
    with pytest.raises(VarcompressError, match="data.path: .* is not a directory"):
        load_data(*setup_run(rec), Dist(), _on_main)
