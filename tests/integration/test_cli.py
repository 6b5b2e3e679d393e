"""The `transduce` command end to end, in a subprocess: train, translate, evaluate, --help, and
one-line errors (exit status 2, no traceback) for every kind of bad input."""
import argparse
import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from transduce.cli import _decode_overrides, _section_overrides, build_parser
from transduce.config import DecodeConfig, ServeConfig, options_of
from transduce.evaluation.code_bleu import code_bleu

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
SMALL = ["--set", "model.hidden=32", "--set", "model.embed_dim=32", "--set", "train.threads=1",
         "--set", "train.batch_tokens=200", "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1"]


def run(*args, stdin: str | bytes | None = None, timeout=120) -> subprocess.CompletedProcess:
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    proc = subprocess.run([sys.executable, "-m", "transduce", *map(str, args)], input=data,
                          capture_output=True, timeout=timeout, env=ENV)
    proc.out = proc.stdout.decode("utf-8")
    proc.err = proc.stderr.decode("utf-8")
    return proc


def _pairs(count, seed):
    rng = random.Random(seed)
    words = [" ".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(count)]
    return [(w, w[::-1]) for w in words]


def _write_tsv(path, pairs):
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train = _write_tsv(root / "train.tsv", _pairs(60, 0))
    dev = _write_tsv(root / "dev.tsv", _pairs(10, 1))
    out = root / "model"
    proc = run("train", "--train", train, "--dev", dev, "--out", out, "--steps", 20, *SMALL, "--quiet")
    assert proc.returncode == 0, proc.err
    return root, out, proc


def test_train_writes_a_model_folder(trained):
    _, out, proc = trained
    for name in ("model.safetensors", "config.json", "src_vocab.json", "tgt_vocab.json", "log.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints").is_dir()
    assert any(p.name.startswith("step-") for p in (out / "checkpoints").iterdir())
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden"] == 32 and config["train"]["steps"] == 20
    assert config["data"]["train"].endswith("train.tsv")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == 20
    assert "Traceback" not in proc.err
    assert "model saved in" in proc.err


def test_train_keeps_stdout_clean(trained):
    _, _, proc = trained
    assert proc.out == ""


def test_translate_one_line_per_input_line(trained):
    _, out, _ = trained
    lines = ["a b c", "f e", "", "d d d d", "   "]
    proc = run("translate", "--model", out, "--beam", 2, "--max-length", 12, stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.err
    assert proc.out.endswith("\n")
    assert len(proc.out.split("\n")) - 1 == len(lines)
    assert "Traceback" not in proc.err


def test_translate_input_and_output_files(trained):
    root, out, _ = trained
    (root / "in.txt").write_text("a b\nc d e\n", encoding="utf-8")
    proc = run("translate", "--model", out, "--input", root / "in.txt", "--output", root / "out.txt", "--beam", 1)
    assert proc.returncode == 0, proc.err
    assert len((root / "out.txt").read_text(encoding="utf-8").splitlines()) == 2
    assert proc.out == ""


def test_translate_nbest(trained):
    _, out, _ = trained
    proc = run("translate", "--model", out, "--nbest", 2, "--beam", 3, "--max-length", 12, stdin="a b c\nf e\n")
    assert proc.returncode == 0, proc.err
    rows = proc.out.split("\n")[:-1]
    assert len(rows) == 2
    for row in rows:
        fields = row.split("\t")
        assert len(fields) == 4, row  # text, score, text, score
        scores = [float(fields[1]), float(fields[3])]
        assert scores[0] >= scores[1]
        assert all(s <= 0 for s in scores)


def test_translate_json(trained):
    _, out, _ = trained
    proc = run("translate", "--model", out, "--nbest", 2, "--beam", 3, "--max-length", 12, "--json",
               stdin="a b c\nf e\n")
    assert proc.returncode == 0, proc.err
    records = [json.loads(line) for line in proc.out.splitlines()]
    assert [r["source"] for r in records] == ["a b c", "f e"]
    for record in records:
        assert len(record["outputs"]) == 2
        for output in record["outputs"]:
            assert set(output) == {"text", "score", "tokens"}
            assert "".join(output["tokens"]) == output["text"]  # characters
        assert record["outputs"][0]["score"] >= record["outputs"][1]["score"]


@pytest.mark.parametrize("decode", [["--beam", 1], ["--beam", 3, "--nbest", 2], ["--sample", "--seed", 1]])
def test_translate_json_with_attention(trained, decode):
    _, out, _ = trained
    proc = run("translate", "--model", out, "--max-length", 8, "--json", "--attention", *decode,
               stdin="a b c\nf e d\n")
    assert proc.returncode == 0, proc.err
    for line, source in zip(proc.out.splitlines(), ["a b c", "f e d"]):
        for output in json.loads(line)["outputs"]:
            assert output["source_tokens"] == list(source)
            assert len(output["attention"]) == len(output["tokens"]) + 1  # and the end of the output
            for row in output["attention"]:
                assert len(row) == len(source) and sum(row) == pytest.approx(1.0, abs=1e-4)


def test_translate_attention_needs_json(trained):
    _, out, _ = trained
    _assert_one_line_error(run("translate", "--model", out, "--attention", stdin="a\n"), "--json")


def test_translate_and_evaluate_with_decoding_rules(trained):
    root, out, _ = trained
    rules = ["--no-repeat-ngram", 2, "--suppress-unk", "--length-penalty", "gnmt", "--length-alpha", 1.0,
             "--min-length", 2, "--max-length", 12]
    for decode in (["--beam", 1], ["--beam", 3], ["--sample"]):
        proc = run("translate", "--model", out, "--json", *rules, *decode, stdin="a b c\nd d d d\nz z\n")
        assert proc.returncode == 0, proc.err
        for line in proc.out.splitlines():
            tokens = json.loads(line)["outputs"][0]["tokens"]
            assert len(tokens) >= 2 and "<unk>" not in tokens
            assert len(set(itertools.pairwise(tokens))) == len(tokens) - 1, tokens
    proc = run("evaluate", "--model", out, "--data", root / "dev.tsv", *rules)
    assert proc.returncode == 0, proc.err
    decode = json.loads(proc.out)["decode"]
    assert (decode["no_repeat_ngram"], decode["suppress_unk"], decode["length_penalty"], decode["length_alpha"],
            decode["min_length"]) == (2, True, "gnmt", 1.0, 2)


def test_evaluate_prints_a_json_report(trained):
    root, out, _ = trained
    proc = run("evaluate", "--model", out, "--data", root / "dev.tsv", "--beam", 2, "--max-length", 12,
               "--hypotheses", root / "hyp.txt")
    assert proc.returncode == 0, proc.err
    report = json.loads(proc.out)
    for key in ("bleu", "chrf", "exact_match", "perplexity"):
        assert isinstance(report[key], (int, float)), key
    assert report["sentences"] == 10
    assert 0 <= report["exact_match"] <= 100 and report["perplexity"] > 1
    assert "code_bleu" not in report
    hypotheses = (root / "hyp.txt").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == 10

    proc = run("evaluate", "--model", out, "--data", root / "dev.tsv", "--beam", 2, "--max-length", 12, "--code-bleu")
    assert proc.returncode == 0, proc.err
    references = [line.split("\t")[1] for line in (root / "dev.tsv").read_text(encoding="utf-8").splitlines()]
    with_code = json.loads(proc.out)
    assert with_code["code_bleu"] == round(code_bleu(hypotheses, references)["score"], 2)
    assert with_code["code_bleu_signature"].startswith("code-tokens|")


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize("command, cls", [("translate", DecodeConfig), ("evaluate", DecodeConfig),
                                          ("serve", ServeConfig)])
def test_flags_are_exactly_the_declared_config_fields(command, cls):
    """One flag per field of the section, with its help, type and choices; absent, each is None."""
    parser = _subcommand(command)
    names = {f.name for f in dataclasses.fields(cls)}
    flags = {a.dest: a for a in parser._actions if a.dest in names}
    assert set(flags) == names
    for declared in options_of(cls):
        action = flags[declared.name]
        if declared.kind is bool:  # a switch flips the default: --suppress-unk, --no-batching
            prefix = "--no-" if declared.default else "--"
            assert isinstance(action, argparse._StoreConstAction) and action.const is (not declared.default)
        else:
            prefix = "--"
            assert action.type is (None if declared.choices else declared.kind)
            assert action.choices == declared.choices
        assert action.option_strings == [declared.flag or prefix + declared.name.replace("_", "-")]
        assert declared.help in action.help, (action.help, declared.help)
        assert action.default is None
    given = {"evaluate": ["--model", "m", "--data", "d"]}.get(command, ["--model", "m"])
    args = parser.parse_args(given)
    if cls is DecodeConfig:
        assert _decode_overrides(args) == dict.fromkeys(names)
    section = "serve" if cls is ServeConfig else "decode"
    assert _section_overrides(args, section, cls) == {}
    if cls is ServeConfig:
        args = parser.parse_args(given + ["--timeout", "3", "--no-batching"])
        assert _section_overrides(args, section, cls) == {"serve.timeout_s": 3.0, "serve.batching": False}


def test_decode_flags_reach_the_decode_config(trained):
    """Every flag lands in the DecodeConfig the decoder gets, checked by its limits."""
    root, out, _ = trained
    flags = ["--beam", 2, "--max-length", 9, "--max-length-ratio", 3.0, "--min-length", 1, "--length-penalty", "none",
             "--length-alpha", 0.3, "--no-repeat-ngram", 3, "--suppress-unk", "--batch-size", 7, "--temperature", 0.5,
             "--top-k", 4, "--top-p", 0.9, "--seed", 11]
    proc = run("evaluate", "--model", out, "--data", root / "dev.tsv", *flags)
    assert proc.returncode == 0, proc.err
    assert json.loads(proc.out)["decode"] == {
        "beam": 2, "max_length": 9, "max_length_ratio": 3.0, "min_length": 1, "length_penalty": "none",
        "length_alpha": 0.3, "no_repeat_ngram": 3, "suppress_unk": True, "batch_size": 7, "sample": False,
        "temperature": 0.5, "top_k": 4, "top_p": 0.9, "seed": 11}
    _assert_one_line_error(run("translate", "--model", out, "--top-p", 1.5, stdin="a\n"),
                           "decode.top_p: must be in (0, 1]")
    _assert_one_line_error(run("translate", "--model", out, "--beam", 0, stdin="a\n"), "decode.beam: must be > 0")


@pytest.mark.parametrize("command", [None, "train", "translate", "evaluate", "plot", "demo"])
def test_help(command):
    proc = run(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.err
    assert "usage:" in proc.out
    assert proc.err == ""


def test_missing_model_folder(tmp_path):
    proc = run("translate", "--model", tmp_path / "nothing", stdin="a\n")
    _assert_one_line_error(proc, str(tmp_path / "nothing"))


# ---- bad input ------------------------------------------------------------------------------
def _assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.err)
    assert "Traceback" not in proc.err
    lines = proc.err.splitlines()
    assert len(lines) == 1, proc.err
    assert lines[0].startswith("transduce: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


GOOD = "a b\tb a\nc d\td c\n"

BAD_FILES = {
    # name: (file name, contents, fragment of the message after the path)
    "no-tab": ("train.tsv", GOOD + "a line without a tab\n", ":3"),
    "extra-column": ("train.tsv", GOOD + "a\tb\tc\n", ":3"),
    "invalid-utf8": ("train.tsv", GOOD.encode() + b"ok\tbad \xff\xfe here\n", ":3"),
    "malformed-json": ("train.jsonl", '{"source": "a", "target": "b"}\n{"source": "a", "target": \n', ":2"),
    "missing-field": ("train.jsonl", '{"source": "a", "target": "b"}\n{"source": "a"}\n', ":2"),
    "empty-file": ("train.tsv", "", ""),
}


def _train_out(tmp_path):
    return ["--out", tmp_path / "out", "--steps", 2, *SMALL, "--quiet"]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_training_file(tmp_path, case):
    name, contents, where = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(contents if isinstance(contents, bytes) else contents.encode("utf-8"))
    proc = run("train", "--train", path, *_train_out(tmp_path))
    _assert_one_line_error(proc, f"{path}{where}")


def test_bad_line_number_in_the_middle_of_a_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(GOOD * 20 + "oops\n" + GOOD * 5, encoding="utf-8")
    proc = run("train", "--train", path, *_train_out(tmp_path))
    _assert_one_line_error(proc, f"{path}:41:")


def test_aligned_files_of_different_length(tmp_path):
    src = tmp_path / "train.src"
    tgt = tmp_path / "train.tgt"
    src.write_text("a b\nc d\ne f\n", encoding="utf-8")
    tgt.write_text("b a\nd c\n", encoding="utf-8")
    proc = run("train", "--train", src, "--train-target", tgt, *_train_out(tmp_path))
    _assert_one_line_error(proc, f"{tgt}:3")


def test_missing_file(tmp_path):
    path = tmp_path / "does-not-exist.tsv"
    proc = run("train", "--train", path, *_train_out(tmp_path))
    _assert_one_line_error(proc, str(path))


def test_missing_dev_file(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", _pairs(10, 0))
    dev = tmp_path / "no-dev.tsv"
    proc = run("train", "--train", train, "--dev", dev, *_train_out(tmp_path))
    _assert_one_line_error(proc, str(dev))


def test_unknown_set_key(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", _pairs(10, 0))
    proc = run("train", "--train", train, *_train_out(tmp_path), "--set", "model.hiden=64")
    _assert_one_line_error(proc, "model.hiden")


def test_bad_set_value_type(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", _pairs(10, 0))
    proc = run("train", "--train", train, *_train_out(tmp_path), "--set", "model.hidden=big")
    _assert_one_line_error(proc, "model.hidden")


def test_bad_config_file(tmp_path):
    train = _write_tsv(tmp_path / "train.tsv", _pairs(10, 0))
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  hiden: 64\n", encoding="utf-8")
    proc = run("train", config, "--train", train, *_train_out(tmp_path))
    _assert_one_line_error(proc, str(config), "model.hiden")


def test_bad_evaluate_data(trained, tmp_path):
    _, out, _ = trained
    data = tmp_path / "test.tsv"
    data.write_text("a b\tb a\nbroken line\n", encoding="utf-8")
    proc = run("evaluate", "--model", out, "--data", data)
    _assert_one_line_error(proc, f"{data}:2")


def test_translate_missing_input_file(trained, tmp_path):
    _, out, _ = trained
    path = tmp_path / "no-input.txt"
    proc = run("translate", "--model", out, "--input", path)
    _assert_one_line_error(proc, str(path))


def test_translate_invalid_utf8_input_file(trained, tmp_path):
    _, out, _ = trained
    path = tmp_path / "input.txt"
    path.write_bytes(b"a b\n\xff\xfe c\n")
    proc = run("translate", "--model", out, "--input", path, "--max-length", 5)
    _assert_one_line_error(proc, str(path))


def _copy_model(out, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


def test_model_folder_with_a_broken_config(trained, tmp_path):
    model = _copy_model(trained[1], tmp_path)
    (model / "config.json").write_text('{"model": ', encoding="utf-8")
    proc = run("translate", "--model", model, stdin="a\n")
    _assert_one_line_error(proc, str(model / "config.json"))


def test_model_folder_without_a_vocabulary(trained, tmp_path):
    model = _copy_model(trained[1], tmp_path)
    (model / "src_vocab.json").unlink()
    proc = run("translate", "--model", model, stdin="a\n")
    _assert_one_line_error(proc, str(model / "src_vocab.json"))


def test_model_folder_with_truncated_weights(trained, tmp_path):
    model = _copy_model(trained[1], tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    proc = run("translate", "--model", model, stdin="a\n")
    _assert_one_line_error(proc, str(weights))


def test_model_folder_with_weights_of_another_shape(trained, tmp_path):
    model = _copy_model(trained[1], tmp_path)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["model"]["hidden"] = config["model"]["embed_dim"] = 64
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    proc = run("translate", "--model", model, stdin="a\n")
    _assert_one_line_error(proc, str(model))


# ---- pairs with an empty side -----------------------------------------------------------------
EMPTY_SIDES = "a b\tb a\n\tx\nc d\td c\ny\t\ne f\tf e\n  \t  \n"


def test_empty_sides_are_skipped_and_counted(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(EMPTY_SIDES, encoding="utf-8")
    proc = run("train", "--train", path, *_train_out(tmp_path))
    assert proc.returncode == 0, proc.err
    assert "Traceback" not in proc.err
    skipped = [line for line in proc.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "skipped 3 " in skipped[0], proc.err
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_empty_side_is_an_error_when_asked(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(EMPTY_SIDES, encoding="utf-8")
    proc = run("train", "--train", path, *_train_out(tmp_path), "--set", "data.on_empty=error")
    line = _assert_one_line_error(proc, f"{path}:2")
    assert "empty" in line


def test_empty_sides_are_counted_in_a_run_shorter_than_an_epoch(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(EMPTY_SIDES + "".join(f"{s}\t{t}\n" for s, t in _pairs(600, 3)), encoding="utf-8")
    proc = run("train", "--train", path, *_train_out(tmp_path))
    assert proc.returncode == 0, proc.err
    skipped = [line for line in proc.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "skipped 3 " in skipped[0], proc.err


def test_plot_draws_the_run_and_names_a_missing_log(trained, tmp_path):
    _, out, _ = trained
    proc = run("plot", out, "--out", tmp_path / "curves.png")
    assert proc.returncode == 0, proc.err
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    proc = run("plot", tmp_path)
    assert proc.returncode == 2 and proc.err.strip() == f"transduce: error: {tmp_path}: no log.jsonl (not a training run folder)"


def test_average_the_last_checkpoints_and_translate_with_them(trained, tmp_path):
    from safetensors.numpy import load_file

    root, _, _ = trained  # its run keeps a single checkpoint (the last step): train one that saves often
    run_dir = tmp_path / "run"
    proc = run("train", "--train", root / "train.tsv", "--out", run_dir, "--steps", 6, "--save-every", 2,
               *SMALL, "--quiet")
    assert proc.returncode == 0, proc.err
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert kept == ["step-0000002", "step-0000004", "step-0000006"]

    avg = tmp_path / "averaged"
    proc = run("average", run_dir, "--last", 2, "--out", avg)
    assert proc.returncode == 0, proc.err
    assert proc.out == ""
    assert "averaged 2 checkpoints (step-0000004, step-0000006)" in proc.err
    for name in ("model.safetensors", "config.json", "src_vocab.json", "tgt_vocab.json"):
        assert (avg / name).is_file(), name
    a, b = (load_file(str(run_dir / "checkpoints" / name / "model.safetensors")) for name in kept[1:])
    mean = load_file(str(avg / "model.safetensors"))
    assert set(mean) == set(a)
    assert any((a[key] != b[key]).any() for key in a)
    for key in a:
        assert (mean[key] == ((a[key].astype("float64") + b[key]) / 2).astype(a[key].dtype)).all(), key

    lines = ["a b c", "f e d", "b"]
    proc = run("translate", "--model", avg, "--beam", 2, "--max-length", 12, stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.err
    assert len(proc.out.split("\n")) - 1 == len(lines)
    assert "Traceback" not in proc.err

    proc = run("average", run_dir, "--last", 4, "--out", tmp_path / "too-many")
    _assert_one_line_error(proc, str(run_dir), "only 3 kept")
    assert not (tmp_path / "too-many").exists()

    one = tmp_path / "step-2"  # one named checkpoint as a model folder: its weights unchanged
    proc = run("average", run_dir, "--steps", 2, "--out", one)
    assert proc.returncode == 0, proc.err
    assert "averaged 1 checkpoints (step-0000002)" in proc.err
    first = load_file(str(run_dir / "checkpoints" / kept[0] / "model.safetensors"))
    assert all((load_file(str(one / "model.safetensors"))[key] == first[key]).all() for key in first)
    proc = run("evaluate", "--model", one, "--data", root / "train.tsv", "--max-length", 12)
    assert proc.returncode == 0, proc.err
    proc = run("average", run_dir, "--steps", 3, "--out", tmp_path / "missing")
    _assert_one_line_error(proc, str(run_dir), "no checkpoint of update 3 (kept: 2, 4, 6)")


def test_translate_and_evaluate_with_an_ensemble(trained, tmp_path):
    root, out, _ = trained
    second = tmp_path / "second"  # the same data and vocabulary, another seed
    proc = run("train", "--train", root / "train.tsv", "--out", second, "--steps", 20, "--set", "train.seed=7",
               *SMALL, "--quiet")
    assert proc.returncode == 0, proc.err
    lines = ["a b c", "f e d", "b"]
    proc = run("translate", "--model", out, second, "--beam", 2, "--nbest", 2, "--max-length", 12,
               stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.err
    rows = [line.split("\t") for line in proc.out.splitlines()]
    assert len(rows) == len(lines) and all(len(row) == 4 for row in rows)  # two outputs, two scores
    proc = run("evaluate", "--model", out, second, "--data", root / "dev.tsv", "--beam", 2, "--max-length", 12)
    assert proc.returncode == 0, proc.err
    assert json.loads(proc.out)["sentences"] == 10

    other = tmp_path / "other"  # another vocabulary
    _write_tsv(tmp_path / "other.tsv", [(s.upper(), t.upper()) for s, t in _pairs(60, 0)])
    proc = run("train", "--train", tmp_path / "other.tsv", "--out", other, "--steps", 2, *SMALL, "--quiet")
    assert proc.returncode == 0, proc.err
    proc = run("translate", "--model", out, other, stdin="a\n")
    _assert_one_line_error(proc, str(other), "cannot join an ensemble", "other vocabularies")
