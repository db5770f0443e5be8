"""Bad inputs to `compare` (specs, recipes, flags) are one-line errors with exit code 2."""
from __future__ import annotations

import pytest

from varcompress.cli import main
from varcompress.compare import load_compare_recipe, parse_spec
from varcompress.errors import VarcompressError


def test_parse_spec():
    assert (parse_spec("a=runs/x").label, parse_spec("a=runs/x").spec) == ("a", "runs/x")
    assert parse_spec("runs/act75/student").label == "act75"
    assert parse_spec("runs/wanda75/var.pth").label == "wanda75"
    assert parse_spec("digits").label == "digits"
    for bad in ("", "a=", "=b"):
        with pytest.raises(VarcompressError):
            parse_spec(bad)


def test_recipe(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dataset: digits\nmodels:\n  - runs/a\n  - {label: B, model: runs/b}\neval: {n_per_class: 4}\n"
                 "latency: {batches: [2]}\n")
    entries, where, opts = load_compare_recipe(p)
    assert [(e.label, e.spec) for e in entries] == [("a", "runs/a"), ("B", "runs/b")]
    assert where == {"dataset": "digits", "teacher": None, "vae": None}
    assert (opts.n_per_class, opts.batches, opts.rounds, opts.seeds) == (4, [2], 3, [0, 1, 2])


@pytest.mark.parametrize("text,msg", [
    ("dataset: digits\nmodels: []\n", "models: expected at least 1"),
    ("dataset: digits\nmodels: [a]\nevals: {}\n", "evals: unknown key"),
    ("dataset: digits\nmodels: [a]\neval: {n_per_class: 1}\n", "eval.n_per_class"),
    ("dataset: digits\nmodels: [{label: x}]\n", "models[0]"),
    ("models: [a]\n", "dataset: give a testbed dataset or a teacher"),
    ("- a\n- b\n", "expected a mapping"),
    ("models: [a\n", "invalid YAML"),
])
def test_bad_recipes(tmp_path, text, msg):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(VarcompressError, match=None) as e:
        load_compare_recipe(p)
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "digits"], "give model specs or --recipe"),
    (["no/such/model", "--dataset", "digits"], "no such file or directory"),
    (["a=digits", "a=digits", "--dataset", "digits"], "labels must be unique"),
    (["digits"], "give --dataset"),
    (["digits", "--dataset", "digits", "--n-per-class", "1"], "n_per_class"),
    (["digits", "--dataset", "digits", "--threads", "0"], "--threads must be >= 1"),
    (["digits", "--recipe", "no.yaml"], "no.yaml: no such file"),
    (["digits", "--dataset", "mnist"], "mnist"),
])
def test_cli_errors_are_one_line(args, msg, tmp_path, capsys):
    rc = main(["compare", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["compare", "digits", "--dataset", "digits", "--out", str(tmp_path / "out")]) == 2
    assert "exists (use --force" in capsys.readouterr().err
