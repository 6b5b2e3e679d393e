"""int8 model folders: what quantize_model_dir writes (int8 + scales, JSON, no pickle, smaller), and
what Translator.from_dir makes of it (int8 modules, outputs close to the float model's)."""
import json
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.ao.nn.quantized import dynamic as qdynamic

from transduce.config import Config
from transduce.constants import (
    CONFIG_FILE,
    SRC_VOCAB_FILE,
    TGT_VOCAB_FILE,
    WEIGHTS_FILE,
)
from transduce.data.batching import collate
from transduce.data.codec import TextCodec
from transduce.data.readers import read_pairs
from transduce.evaluation.reference_scoring import reference_nll
from transduce.export.quantize import quantize_model_dir
from transduce.inference import Translator
from transduce.model_folder import QUANTIZATION_FILE, ModelLoadError, QuantizeError
from transduce.models.int8 import MIN_FEATURES, Int8RecurrentCell, dequantize_rows
from transduce.models.builder import build_model
from transduce.kernels import Linear
from transduce.models.rnn import RecurrentCell
from transduce.training.checkpoint import save_weights
from transduce.training.trainer import Trainer

ALPHABET = "abcdefghij"
MODELS = {
    "lstm": {"arch": "lstm", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 2,
             "attention": "general", "share_embeddings": True, "tie_output": True},
    "transformer": {"arch": "transformer", "embed_dim": 32, "hidden": 32, "heads": 4, "ff_size": 64,
                    "encoder_layers": 1, "decoder_layers": 2, "share_embeddings": True, "tie_output": True},
}


def _write_copy_task(path, count, seed):
    rng = random.Random(seed)
    strings = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(3, 9))) for _ in range(count)]
    path.write_text("".join(f"{s}\t{s}\n" for s in strings), encoding="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy")
    _write_copy_task(root / "train.tsv", 1000, 0)
    _write_copy_task(root / "test.tsv", 60, 1)
    return root


@pytest.fixture(scope="module", params=sorted(MODELS))
def folders(request, data, tmp_path_factory):
    """(float folder, int8 folder, what quantize_model_dir returned) of a briefly trained model."""
    root = tmp_path_factory.mktemp(request.param)
    config = Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {**MODELS[request.param], "dropout": 0.0},
        "train": {"steps": 300, "batch_tokens": 1000, "lr": 1e-2, "warmup": 10, "log_every": 40,
                  "eval_every": 0, "save_every": 0, "threads": 1, "progress": False, "seed": 3},
        "decode": {"beam": 1, "max_length": 16},
    })
    Trainer(config, root / "float", device="cpu", log=lambda message: None).fit()
    summary = quantize_model_dir(root / "float", root / "int8")
    return root / "float", root / "int8", summary


def test_folder_holds_tensors_and_json_only(folders):
    _, int8, summary = folders
    names = sorted(p.name for p in int8.iterdir())
    assert names == sorted([CONFIG_FILE, QUANTIZATION_FILE, SRC_VOCAB_FILE, TGT_VOCAB_FILE, WEIGHTS_FILE])
    for path in int8.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80", f"{path.name} looks like a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    with safe_open(str(int8 / WEIGHTS_FILE), "pt") as f:  # safetensors parses it: no code runs
        assert f.metadata()["format"] == "transduce-int8"
    assert summary["out_dir"] == str(int8) and summary["quantized_tensors"] > 0


def test_weights_are_int8_with_row_scales_and_the_file_is_smaller(folders):
    float_dir, int8, summary = folders
    meta = json.loads((int8 / QUANTIZATION_FILE).read_text())
    original, stored = load_file(str(float_dir / WEIGHTS_FILE)), load_file(str(int8 / WEIGHTS_FILE))
    assert meta["tensors"]
    for name, info in meta["tensors"].items():
        qweight, scale = stored[name + ".qweight"], stored[name + ".scale"]
        assert name not in stored
        assert qweight.dtype == torch.int8 and list(qweight.shape) == info["shape"]
        assert scale.dtype == torch.float32 and scale.shape == (qweight.size(0),)
        assert qweight.abs().amax(dim=1).eq(127).any()  # the scale spans each row's largest weight
        error = (dequantize_rows(qweight, scale) - original[name]).abs()
        assert bool((error <= scale[:, None] / 2 + 1e-7).all()), name  # rounding: half a step at most
    # every matrix is int8: embedding (tied to the output), attention / feed-forward / recurrent ones
    roles = {role for info in meta["tensors"].values() for role in info["roles"]}
    assert {"embedding", "linear"} <= roles
    float_bytes, int8_bytes = (float_dir / WEIGHTS_FILE).stat().st_size, (int8 / WEIGHTS_FILE).stat().st_size
    assert (summary["float_bytes"], summary["int8_bytes"]) == (float_bytes, int8_bytes)
    assert int8_bytes < 0.45 * float_bytes, summary


def test_loaded_modules_are_int8_and_hold_the_stored_integers(folders):
    _, int8, _ = folders
    translator = Translator.from_dir(int8)
    model = translator.model
    assert translator.device.type == "cpu"
    assert not any(isinstance(m, torch.nn.Linear) and min(m.in_features, m.out_features) >= MIN_FEATURES
                   and m is not getattr(model, "combine", None) for m in model.modules())
    assert not any(type(m) is RecurrentCell for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, qdynamic.Linear)]
    assert isinstance(model.output, qdynamic.Linear)
    if model.cfg.arch == "lstm":
        assert all(isinstance(m, Int8RecurrentCell) for m in model.cells)
        # the encoder's fused LSTM runs in float32 (faster than torch's int8 one) on the stored integers
        with safe_open(str(int8 / WEIGHTS_FILE), "pt") as f:
            qweight, scale = (f.get_tensor("encoder.forward_rnns.0.weight_hh_l0" + s) for s in (".qweight", ".scale"))
        assert torch.equal(model.encoder.forward_rnns[0].weight_hh_l0, dequantize_rows(qweight, scale))
    # the output projection (tied: the stored embedding) holds the stored integers, not re-rounded ones
    tensors = json.loads((int8 / QUANTIZATION_FILE).read_text())["tensors"]
    name = next(n for n, info in tensors.items() if info["roles"] == ["embedding", "linear"])  # stored once
    with safe_open(str(int8 / WEIGHTS_FILE), "pt") as f:
        qweight, scale = f.get_tensor(name + ".qweight"), f.get_tensor(name + ".scale")
    packed = model.output.weight()
    assert packed.dtype == torch.qint8 and torch.equal(packed.int_repr(), qweight)
    assert torch.allclose(packed.q_per_channel_scales().float(), scale)
    assert torch.equal(model.tgt_embed.weight, dequantize_rows(qweight, scale))  # lookups read the same values
    assert len(linears) >= 4


def test_outputs_are_close_to_the_float_model(folders, data):
    """int8 rounding (weights per row, activations per batch) moves a tiny model's likely tokens'
    log-probabilities by a few hundredths; its outputs are (mostly) the float model's."""
    float_dir, int8, _ = folders
    fp32, q8 = Translator.from_dir(float_dir, device="cpu"), Translator.from_dir(int8)
    pairs = list(read_pairs(data / "test.tsv"))
    examples = list(fp32.codec.examples(pairs))
    batch = collate(examples[:20])
    with torch.inference_mode():  # teacher-forced log-probabilities of every reference position
        args = (batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        a, b = fp32.model(*args), q8.model(*args)  # (N, V)
    likely = a > -4.6  # p > 1%
    assert (a - b).abs()[likely].mean() < 0.1
    assert (a.exp() - b.exp()).abs().max() < 0.3
    assert bool((a.argmax(1) == b.argmax(1)).float().mean() > 0.95)
    nll_a, tokens = reference_nll(fp32.model, examples, 512)
    nll_b, _ = reference_nll(q8.model, examples, 512)
    assert abs(nll_b - nll_a) / tokens < 0.05
    # the same outputs through the same API, greedy and beam
    sources = [p.source for p in pairs]
    for beam in (1, 3):
        outputs_a, outputs_b = fp32.translate(sources, beam=beam), q8.translate(sources, beam=beam)
        assert sum(x == y for x, y in zip(outputs_a, outputs_b)) >= 0.85 * len(sources), beam


def test_gru_without_input_feeding(tmp_path, data):
    """The GRU paths (a first decoder cell with no step input: no feeding, no layer below) load and agree."""
    config = Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "gru", "embed_dim": 32, "hidden": 32, "encoder_layers": 2, "decoder_layers": 2,
                  "input_feeding": False, "attention": "bahdanau", "tie_output": False},
    })
    codec = TextCodec.build(config.data, lambda: read_pairs(data / "train.tsv"))
    torch.manual_seed(0)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    (tmp_path / "float").mkdir()
    codec.save(tmp_path / "float")
    config.save(tmp_path / "float" / CONFIG_FILE)
    save_weights(model, tmp_path / "float" / WEIGHTS_FILE)
    quantize_model_dir(tmp_path / "float", tmp_path / "int8")
    q8 = Translator.from_dir(tmp_path / "int8")
    assert [cell.step_weights()[0] is None for cell in q8.model.cells] == [True, False]
    batch = collate(list(codec.examples(read_pairs(data / "test.tsv")))[:10])
    with torch.inference_mode():
        args = (batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        assert (model.eval()(*args) - q8.model(*args)).abs().max() < 0.1
    assert len(q8.translate(["abc", "hij"], beam=2)) == 2


def test_refusals(folders, tmp_path):
    float_dir, int8, _ = folders
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_model_dir(int8, tmp_path / "again")
    with pytest.raises(QuantizeError, match="must differ"):
        quantize_model_dir(float_dir, float_dir)
    with pytest.raises(QuantizeError, match="not a model folder"):
        quantize_model_dir(tmp_path, tmp_path / "out")
    with pytest.raises(ModelLoadError, match="int8 model decodes on the CPU"):
        Translator.from_dir(int8, precision="bf16")
    with pytest.raises(ModelLoadError, match="int8 model decodes on the CPU"):
        Translator.from_dir(int8, device="cuda")


def test_named_weights_can_stay_float(folders, tmp_path):
    float_dir, _, _ = folders
    summary = quantize_model_dir(float_dir, tmp_path / "int8", keep_float=["output.weight"])
    meta = json.loads((tmp_path / "int8" / QUANTIZATION_FILE).read_text())
    assert meta["kept_float"] == ["output.weight"] and summary["quantized_tensors"] == len(meta["tensors"])
    model = Translator.from_dir(tmp_path / "int8").model
    assert type(model.output) is Linear and model.output.weight is model.tgt_embed.weight  # still tied
    fp32 = Translator.from_dir(float_dir, device="cpu").model
    assert torch.equal(model.output.weight, fp32.output.weight)
    assert any(isinstance(m, qdynamic.Linear) for m in model.modules())
    with pytest.raises(QuantizeError, match="no weights named nothing.weight"):
        quantize_model_dir(float_dir, tmp_path / "x", keep_float=["nothing.weight"])

