"""Fine-tuning: a run that starts from a trained model folder (`train.init_from`).

Pre-training on a large set and fine-tuning on a small one only works when the second run reads
text with the first one's tokenizers and vocabularies and builds the same network, so those are
taken from the folder, and the settings that decide them are checked against it before anything
is trained. Regularisation (dropout, the coverage loss weight), the initialisation (the weights
replace it), lengths, data and every training setting may change. The weights are loaded once, at
step 0; the optimizer starts afresh.
"""
from __future__ import annotations

from pathlib import Path

import torch

from transduce.config import Config, ConfigError
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.model_folder import load_weights

# model settings that do not change the shapes or the meaning of the weights
FREE_MODEL_KEYS = frozenset({"dropout", "attention_dropout", "coverage_weight", "init"})
# data settings the saved tokenizers and vocabularies were made with
TOKENIZATION_KEYS = ("tokenizer", "shared_vocab")


def check_start_model(config: Config, folder: str | Path) -> None:
    """Fail with the first setting that differs from the model in `folder` (one line, both values)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"train.init_from: {folder} is not a model folder (no {CONFIG_FILE})")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"train.init_from: {folder} has no {WEIGHTS_FILE}")
    saved = Config.load(folder / CONFIG_FILE).to_dict()  # defaults fill keys an older folder lacks
    current = config.to_dict()
    keys = [("data", key) for key in TOKENIZATION_KEYS]
    keys += [("model", key) for key in current["model"] if key not in FREE_MODEL_KEYS]
    for section, key in keys:
        before, now = saved[section][key], current[section][key]
        if before != now:
            raise ConfigError(f"train.init_from: {folder} was trained with {section}.{key}={before!r}, "
                              f"this config has {now!r}; they must match to start from its weights")


def start_codec(config: Config, folder: str | Path) -> TextCodec:
    """The start model's tokenizers and vocabularies, read with this run's lengths."""
    check_start_model(config, folder)
    return TextCodec.load(config.data, folder)


def load_start_weights(model: torch.nn.Module, folder: str | Path, device: torch.device) -> None:
    path = Path(folder) / WEIGHTS_FILE
    try:
        load_weights(model, path, device)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"train.init_from: {path} does not fit this model ({first})") from None
