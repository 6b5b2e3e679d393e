"""The training loop as an importable class: Trainer.fit / train_step / validate.

Phases of one update: gather `accumulate` token batches → teacher-forced forward and
label-smoothed loss normalised by the update's target tokens → backward → clip → Adam step
with the scheduled rate. Every `log_every` updates a JSON line goes to `log.jsonl`, every
`eval_every` the dev set is scored, every `save_every` a checkpoint is written atomically.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from transduce.config import Config, ConfigError
from transduce.constants import CONFIG_FILE, LOG_FILE, WEIGHTS_FILE
from transduce.data.batching import Batch, collate, token_batches
from transduce.data.codec import TextCodec
from transduce.data.readers import Pair, ReadStats, read_pairs
from transduce.decoding.search import decode_examples
from transduce.evaluation.metrics import perplexity
from transduce.evaluation.reference_scoring import reference_nll
from transduce.evaluation.report import score_outputs
from transduce.inference import pick_device
from transduce.models.builder import build_model, count_parameters
from transduce.training.checkpoint import save_checkpoint, save_weights
from transduce.training.loss import label_smoothed_nll, linear_cross_entropy
from transduce.training.optim import learning_rate, make_optimizer, set_learning_rate


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pair_reader(cfg: Config, split: str, stats: ReadStats | None = None) -> Callable[[], Iterable[Pair]]:
    """A function that opens the train or dev pairs afresh each time it is called (streaming)."""
    data = cfg.data
    path = data.train if split == "train" else data.dev
    target = data.train_target if split == "train" else data.dev_target

    def open_pairs() -> Iterable[Pair]:
        return read_pairs(path, fmt=data.format, target_path=target, source_field=data.source_field,
                          target_field=data.target_field, on_empty=data.on_empty, stats=stats)

    return open_pairs


class Trainer:
    """Builds vocabularies and model from a config, trains, evaluates and saves into `out_dir`."""

    def __init__(self, config: Config, out_dir: str | Path, *, device: str = "auto", log=print):
        if not config.data.train:
            raise ConfigError("no training data: give --train FILE or data.train in the config")
        self.config, self.out_dir, self.log = config, Path(out_dir), log
        self.device = pick_device(device)
        tc = config.train
        # oneDNN keeps compiled kernels for every batch shape it meets (1,024 by default, each with
        # its own buffers): with bucketed batches that is hundreds of MiB for a few percent of speed
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        if tc.threads:
            torch.set_num_threads(tc.threads)
        seed_everything(tc.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)

        dev_pairs = list(pair_reader(config, "dev")()) if config.data.dev else []  # a bad dev file fails first
        self.read_stats = ReadStats()
        self.open_train = pair_reader(config, "train", self.read_stats)
        self.codec = TextCodec.build(config.data, pair_reader(config, "train"))
        self.codec.save(self.out_dir)
        config.save(self.out_dir / CONFIG_FILE)
        self.log(f"vocabulary: source {len(self.codec.src_vocab)}, target {len(self.codec.tgt_vocab)} "
                 f"({config.data.tokenizer} tokens)")

        self.model = build_model(config.model, len(self.codec.src_vocab), len(self.codec.tgt_vocab),
                                 self.codec.source_to_target_ids()).to(self.device)
        self.optimizer = make_optimizer(self.model, tc)
        self.log(f"model: {config.model.arch} encoder-decoder, {count_parameters(self.model):,} parameters")
        self.dev_examples = list(self.codec.examples(dev_pairs, copy=config.model.copy))
        self.dev_references = [p.target for p in dev_pairs][: tc.dev_max_sentences]
        self.skips_reported = False
        self.step, self.epoch = 0, 0
        self.best: dict | None = None

    # ---- data ---------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch]:
        """Token batches forever, epoch after epoch, each epoch shuffled with its own seed."""
        tc = self.config.train
        while True:
            examples = self.codec.examples(self.open_train(), copy=self.config.model.copy)
            count = 0
            for group in token_batches(examples, tc.batch_tokens, pool_batches=tc.pool_batches,
                                       seed=tc.seed + self.epoch):
                count += 1
                yield collate(group)
            if count == 0:
                raise ValueError(f"{self.config.data.train}: no training pairs")
            if self.epoch == 0:
                self.report_skips()
            self.epoch += 1

    def report_skips(self) -> None:
        """Say once how many pairs were dropped for an empty side (after the first epoch, or at the end)."""
        if self.read_stats.skipped_empty and not self.skips_reported:
            self.skips_reported = True
            self.log(f"skipped {self.read_stats.skipped_empty} pairs with an empty side "
                     f"{'' if self.epoch else 'so far '}(data.on_empty=error to stop on them)")

    # ---- one update ---------------------------------------------------------------------
    def train_step(self, batches: list[Batch]) -> dict:
        """One optimizer update over `batches` (gradient accumulation); returns its figures."""
        self.model.train()
        tokens = sum(b.num_tgt_tokens for b in batches)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = 0.0
        bf16 = self.config.train.precision == "bf16"
        for batch in batches:
            batch = batch.to(self.device)
            loss, nll = self.batch_loss(batch, bf16)
            (loss / tokens).backward()
            loss_sum += float(loss.detach())
            nll_sum += float(nll.detach())
        if self.config.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_norm)
        self.step += 1
        lr = learning_rate(self.step, self.config.train)
        set_learning_rate(self.optimizer, lr)
        self.optimizer.step()
        return {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "tokens": tokens, "lr": lr}

    def batch_loss(self, batch: Batch, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and NLL of a batch. A model whose output is a plain linear map + softmax
        gets the fused projection-and-loss (the (N, V) logits never materialise); others (source
        prior, copying) give their scores, and copy models are scored on the extended ids, plus
        the weighted coverage loss."""
        smoothing = self.config.train.label_smoothing
        projection = self.model.output_projection()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if projection is not None:
                features = self.model.features(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in,
                                               batch.tgt_mask)  # (N, H)
            else:
                scores, auxiliary = self.model.training_scores(batch.src, batch.src_mask, batch.src_lengths,
                                                               batch.tgt_in, batch.tgt_mask, batch.src_ext)
        if projection is not None:
            return linear_cross_entropy(features, projection.weight, projection.bias,
                                        batch.tgt_out[batch.tgt_mask], smoothing)
        loss, nll = label_smoothed_nll(scores, batch.gold, batch.tgt_mask, smoothing)
        if auxiliary is not None:
            loss = loss + self.config.model.coverage_weight * auxiliary.float()
        return loss, nll

    # ---- evaluation ---------------------------------------------------------------------
    def validate(self) -> dict:
        """Dev loss and perplexity (teacher forced), and BLEU/chrF/ROUGE-L of greedy outputs."""
        tc = self.config.train
        nll, tokens = reference_nll(self.model, self.dev_examples, tc.batch_tokens * 2, self.device)
        figures = {"dev_loss": round(nll / max(tokens, 1), 4), "dev_ppl": round(perplexity(nll, tokens), 3)}
        if tc.dev_bleu:
            subset = self.dev_examples[: tc.dev_max_sentences]
            decode_cfg = self.config.decode.__class__(**{**vars(self.config.decode), "beam": 1})
            hyps = decode_examples(self.model, subset, decode_cfg, device=self.device)
            outputs = [self.codec.decode_target(h[0].tokens, ex.oov) for h, ex in zip(hyps, subset)]
            scores = score_outputs(outputs, self.dev_references)
            figures.update(dev_bleu=scores["bleu"], dev_chrf=scores["chrf"], dev_rougeL=scores["rougeL"])
        return figures

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict:
        tc = self.config.train
        log_path = self.out_dir / LOG_FILE
        data = self.batches()
        bar = tqdm(total=tc.steps, initial=self.step, disable=not tc.progress, file=sys.stderr,
                   dynamic_ncols=True, unit="step", desc="train")
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0, "start": time.perf_counter()}
        last: dict = {}
        with open(log_path, "a", encoding="utf-8") as log_file:
            while self.step < tc.steps:
                figures = self.train_step([next(data) for _ in range(tc.accumulate)])
                bar.update(1)
                for key in ("loss", "nll", "tokens"):
                    window[key] += figures[key] * (figures["tokens"] if key != "tokens" else 1)
                window["steps"] += 1
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    elapsed = time.perf_counter() - window["start"]
                    loss = window["loss"] / window["tokens"]
                    last = {"step": self.step, "epoch": self.epoch, "loss": round(loss, 4),
                            "ppl": round(math.exp(min(window["nll"] / window["tokens"], 700)), 3),
                            "lr": figures["lr"], "tgt_tok_per_s": round(window["tokens"] / elapsed, 1),
                            "tgt_tokens": window["tokens"], "seconds": round(elapsed, 4)}
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{figures['lr']:.2e}", tok_s=f"{last['tgt_tok_per_s']:.0f}")
                    self._write_log(log_file, last)
                    window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0, "start": time.perf_counter()}
                if self.dev_examples and tc.eval_every and (self.step % tc.eval_every == 0 or self.step == tc.steps):
                    dev = {"step": self.step, **self.validate()}
                    self._write_log(log_file, dev)
                    bar.write(" ".join(f"{k}={v}" for k, v in dev.items()), file=sys.stderr)
                    last.update(dev)
                    if self.best is None or dev["dev_loss"] < self.best["dev_loss"]:
                        self.best = dev
                    window["start"] = time.perf_counter()  # evaluation time is not training time
                if (tc.save_every and self.step % tc.save_every == 0) or self.step == tc.steps:
                    self.save()
                    window["start"] = time.perf_counter()
        bar.close()
        self.report_skips()
        return last

    def save(self) -> None:
        """The model folder's weights (loadable at once) and a resumable checkpoint."""
        save_weights(self.model, self.out_dir / WEIGHTS_FILE)
        save_checkpoint(self.out_dir, self.step, self.model, self.optimizer,
                        {"epoch": self.epoch, "best": self.best}, self.config.train.keep_checkpoints)

    @staticmethod
    def _write_log(handle, record: dict) -> None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def train(config: Config, out_dir: str | Path | None = None, *, device: str = "auto", log=print) -> Path:
    """`transduce.train(config[, "runs/x"])`: train and return the model folder
    (by default a new folder runs/YYYYmmdd-HHMMSS)."""
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    trainer = Trainer(config, out_dir, device=device, log=log)
    trainer.fit()
    return Path(out_dir)
