"""Reading a model folder: the model comes back with its weights on the device and in the
precision asked for, and every incomplete or mismatched folder is one clear error naming it."""
import json

import pytest
import torch

from transduce.config import Config
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.data.readers import Pair
from transduce.export.quantize import quantize_model_dir
from transduce.model_folder import (
    QUANTIZATION_FILE,
    ModelLoadError,
    QuantizeError,
    is_quantized,
    load_model_folder,
    load_quantized,
    pick_device,
)
from transduce.models.builder import build_model
from transduce.training.checkpoint import save_weights

PAIRS = [Pair("abc", "cba", 1), Pair("hello", "olleh", 2), Pair("xyz", "zyx", 3)]


def _write_folder(directory, arch="transformer"):
    config = Config.from_dict({"data": {"tokenizer": "char", "shared_vocab": True},
                               "model": {"arch": arch, "embed_dim": 16, "hidden": 16, "heads": 2, "ff_size": 32,
                                         "encoder_layers": 1, "decoder_layers": 1}})
    codec = TextCodec.build(config.data, lambda: iter(PAIRS))
    torch.manual_seed(0)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    directory.mkdir(parents=True, exist_ok=True)
    codec.save(directory)
    config.save(directory / CONFIG_FILE)
    save_weights(model, directory / WEIGHTS_FILE)
    return model


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_float_folder_loads_its_weights_in_eval_mode(tmp_path):
    written = _write_folder(tmp_path / "m")
    loaded = load_model_folder(tmp_path / "m", device="cpu")
    assert loaded.device == torch.device("cpu") and not loaded.model.training
    assert len(loaded.codec.src_vocab) == len(loaded.codec.tgt_vocab) > 4
    for (name, a), (_, b) in zip(written.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    bf16 = load_model_folder(tmp_path / "m", device="cpu", precision="bf16").model
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_an_int8_folder_loads_int8_modules_on_the_cpu(tmp_path):
    _write_folder(tmp_path / "m", arch="lstm")
    quantize_model_dir(tmp_path / "m", tmp_path / "q")
    assert is_quantized(tmp_path / "q") and not is_quantized(tmp_path / "m")
    loaded = load_model_folder(tmp_path / "q")
    assert loaded.device == torch.device("cpu")
    assert any(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in loaded.model.modules())
    meta = json.loads((tmp_path / "q" / QUANTIZATION_FILE).read_text())
    (tmp_path / "q" / QUANTIZATION_FILE).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(QuantizeError, match="unknown format 'transduce-int8' version 99"):
        load_quantized(build_model(loaded.config.model, len(loaded.codec.src_vocab), len(loaded.codec.tgt_vocab)),
                       tmp_path / "q")
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        load_model_folder(tmp_path / "q")


def test_incomplete_or_mismatched_folders_are_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=f"not a model folder \\(no {CONFIG_FILE}\\)"):
        load_model_folder(tmp_path)
    _write_folder(tmp_path / "m")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        load_model_folder(tmp_path / "m", precision="fp16")
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    config["model"]["hidden"] = 24  # the weights no longer fit the config
    config["model"]["embed_dim"] = 24
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=f"{WEIGHTS_FILE}: cannot load the weights"):
        load_model_folder(tmp_path / "m", device="cpu")
    (tmp_path / "m" / CONFIG_FILE).write_text("model: [")
    with pytest.raises(ModelLoadError, match="not valid YAML"):
        load_model_folder(tmp_path / "m")
