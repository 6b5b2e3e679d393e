"""`transduce quantize` and `transduce export` from the command line: the int8 folder translates
through the same CLI, the CTranslate2 folder gives our greedy outputs, refusals are one line."""
import subprocess
import sys

import pytest

from tests.csl import csl_pairs, write_tsv


def run(*args):
    return subprocess.run([sys.executable, "-m", "transduce", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-cli")
    pairs = csl_pairs(200, max_source=40)
    write_tsv(root / "train.tsv", pairs)
    out = root / "model"
    proc = run("train", "--train", root / "train.tsv", "--out", out, "--steps", 40, "--quiet",
               "--set", "model.arch=transformer", "--set", "model.embed_dim=32", "--set", "model.hidden=32",
               "--set", "model.heads=4", "--set", "model.ff_size=64", "--set", "model.encoder_layers=1",
               "--set", "model.decoder_layers=1", "--set", "train.eval_every=0", "--set", "train.threads=1",
               "--set", "decode.max_length=12", "--set", "train.lr=3e-3")
    assert proc.returncode == 0, proc.stderr
    return root, out, [s for s, _ in pairs[:8]]


def test_quantize_then_translate_with_the_int8_folder(transformer):
    root, model, sources = transformer
    proc = run("quantize", "--model", model, "--out", root / "int8")
    assert proc.returncode == 0, proc.stderr
    assert "int8 model in" in proc.stderr and "MiB" in proc.stderr
    assert (root / "int8" / "quantization.json").is_file()
    out = subprocess.run([sys.executable, "-m", "transduce", "translate", "--model", str(root / "int8"), "--beam", "1"],
                         input="\n".join(sources) + "\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(sources)
    again = run("quantize", "--model", root / "int8", "--out", root / "int8-again")
    assert again.returncode == 2 and "already quantized" in again.stderr


def test_export_to_ctranslate2_gives_our_greedy_outputs(transformer):
    pytest.importorskip("ctranslate2")
    from transduce.export.ctranslate2 import CTranslate2Translator
    from transduce.inference import Translator

    root, model, sources = transformer
    proc = run("export", "--model", model, "--to", "ctranslate2", "--out", root / "ct2")
    assert proc.returncode == 0, proc.stderr
    ours = Translator.from_dir(model, device="cpu").translate(sources, beam=1)
    assert CTranslate2Translator(root / "ct2").translate(sources, beam=1) == ours
    again = run("export", "--model", model, "--to", "ctranslate2", "--out", root / "ct2")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_export_refuses_an_rnn_in_one_line(transformer, tmp_path):
    root, _, _ = transformer
    proc = run("train", "--train", root / "train.tsv", "--out", tmp_path / "lstm", "--steps", 2, "--quiet",
               "--set", "model.hidden=16", "--set", "model.embed_dim=16", "--set", "train.eval_every=0")
    assert proc.returncode == 0, proc.stderr
    refused = run("export", "--model", tmp_path / "lstm", "--to", "ctranslate2", "--out", tmp_path / "ct2")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Transformer" in refused.stderr
