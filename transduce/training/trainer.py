"""The training loop as an importable class: Trainer.fit / train_step / validate.

Phases of one update: gather `accumulate` token batches → teacher-forced forward and
label-smoothed loss normalised by the update's target tokens → backward → clip → Adam step
with the scheduled rate. Every `log_every` updates a JSON line goes to `log.jsonl`, every
`eval_every` the dev set is scored (the best weights kept, patience counted), every
`save_every` a checkpoint is written atomically. A run folder that already holds checkpoints
is resumed from the newest sound one, exactly: weights, optimizer, generators and the data
position come back, so the resumed run ends bitwise where an uninterrupted one would.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from transduce import kernels
from transduce.config import Config, ConfigError
from transduce.constants import CONFIG_FILE, LOG_FILE, WEIGHTS_FILE
from transduce.data.batching import Batch
from transduce.data.codec import TextCodec
from transduce.data.readers import Pair, ReadStats, read_pairs
from transduce.data.stream import BatchStream, StreamPosition
from transduce.decoding.search import decode_examples
from transduce.evaluation.metrics import perplexity
from transduce.evaluation.reference_scoring import reference_nll
from transduce.evaluation.report import score_outputs
from transduce.model_folder import pick_device
from transduce.models.builder import build_model, count_parameters
from transduce.training.distributed import (
    barrier,
    from_main,
    gather_to_main,
    join_world,
    leave_world,
    sum_over_ranks,
)
from transduce.training.checkpoint import (
    BEST_DIR,
    CHECKPOINT_DIR,
    latest_sound_checkpoint,
    load_checkpoint,
    save_best,
    save_checkpoint,
    save_weights,
)
from transduce.training.early_stopping import BestTracker
from transduce.training.init_from import load_start_weights, start_codec
from transduce.training.interrupt import StopRequests
from transduce.training.objective import TrainingObjective
from transduce.training.optim import learning_rate, make_optimizer, set_learning_rate
from transduce.training.rng import capture_rng, pack_ranks, restore_rng, unpack_rank
from transduce.training.run_log import TENSORBOARD_DIR, RunLog, truncate_log


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


def resolve_precision(precision: str, device: torch.device, arch: str) -> str:
    """auto: bfloat16 mixed precision on a GPU that supports it, float32 elsewhere."""
    if precision == "fp16" and device.type == "cpu" and arch != "transformer":
        raise ConfigError("train.precision: fp16 is for GPUs without bfloat16; the CPU's LSTM/GRU kernels "
                          "have no float16 (use bf16 or fp32)")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


class Trainer:
    """Builds vocabularies and model from a config (or picks up the run already in `out_dir`),
    trains, evaluates and saves into `out_dir`."""

    def __init__(self, config: Config, out_dir: str | Path, *, device: str = "auto", log=print,
                 fresh: bool = False):
        if not config.data.train:
            raise ConfigError("no training data: give --train FILE or data.train in the config")
        self.config, self.out_dir = config, Path(out_dir)
        self.world, self.device = join_world(pick_device(device))
        self.log = log if self.world.is_main else _silent  # one voice for a data-parallel run
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        seed_everything(tc.seed)
        self.kernels = kernels.use(tc.kernels)
        resume_from = None
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if fresh:
                clear_run(self.out_dir)
            resume_from = latest_sound_checkpoint(self.out_dir, self.log, set_aside=True)
        barrier(self.world)
        if not self.world.is_main:  # after the first process has set damaged checkpoints aside
            resume_from = latest_sound_checkpoint(self.out_dir, _silent)

        dev_pairs = list(pair_reader(config, "dev")()) if config.data.dev else []  # a bad dev file fails first
        self.read_stats = ReadStats()
        self.open_train = pair_reader(config, "train", self.read_stats)
        if resume_from is not None:
            check_same_run(config, self.out_dir)
            self.codec = TextCodec.load(config.data, self.out_dir)
        elif self.world.is_main:  # the other processes load what the first one built
            if tc.init_from:
                self.codec = start_codec(config, tc.init_from)
            else:
                self.codec = TextCodec.build(config.data, pair_reader(config, "train"))
            self.codec.save(self.out_dir)
        barrier(self.world)
        if resume_from is None and not self.world.is_main:
            self.codec = TextCodec.load(config.data, self.out_dir)
        if self.world.is_main:
            config.save(self.out_dir / CONFIG_FILE)
        self.log(f"vocabulary: source {len(self.codec.src_vocab)}, target {len(self.codec.tgt_vocab)} "
                 f"({config.data.tokenizer} tokens)")

        self.model = build_model(config.model, len(self.codec.src_vocab), len(self.codec.tgt_vocab),
                                 self.codec.source_to_target_ids()).to(self.device)
        if resume_from is None and tc.init_from:
            load_start_weights(self.model, tc.init_from, self.device)
            self.log(f"starting from the weights of {tc.init_from}")
        self.precision = resolve_precision(tc.precision, self.device, config.model.arch)
        self.objective = TrainingObjective(self.model, tc.label_smoothing, config.model.coverage_weight,
                                           self.precision)
        self.trainable = self.objective
        if self.world.active:  # same initial weights everywhere (DDP broadcasts rank 0's), own dropout draws
            torch.manual_seed(tc.seed + 1000003 * self.world.rank)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trainable = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        self.optimizer = make_optimizer(self.model, tc)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.log(f"model: {config.model.arch} encoder-decoder, {count_parameters(self.model):,} parameters"
                 f"{'' if self.precision == 'fp32' else f', {self.precision} mixed precision'}"
                 f"{f', {self.world.size} processes' if self.world.active else ''}")
        self.log(f"kernels: {self.kernels.describe()}")
        self.dev_examples = list(self.codec.examples(dev_pairs, copy=config.model.copy))
        self.dev_references = [p.target for p in dev_pairs][: tc.dev_max_sentences]
        self.skips_reported = False
        self.step = 0
        self.position = StreamPosition()
        self.tracker = BestTracker(tc.eval_metric, tc.patience)
        self.stopped_early = False
        self.interrupted: int | None = None  # the signal that stopped the run
        if resume_from is not None:
            self.restore(resume_from)

    @property
    def epoch(self) -> int:
        return self.position.epoch

    @property
    def best(self) -> dict | None:
        return self.tracker.best

    # ---- data ---------------------------------------------------------------------------
    def batch_stream(self) -> BatchStream:
        """Token batches forever, epoch after epoch, from the current position (see data/stream.py)."""
        tc = self.config.train

        def to_examples(pairs: Iterable[Pair], start: int):
            return self.codec.examples(pairs, copy=self.config.model.copy, start=start)

        return BatchStream(self.open_train, to_examples, tc.batch_tokens, pool_batches=tc.pool_batches,
                           seed=tc.seed, position=self.position, rank=self.world.rank, world_size=self.world.size,
                           on_epoch_end=lambda epoch: self.report_skips(), name=str(self.config.data.train))

    def report_skips(self) -> None:
        """Say once how many pairs were dropped for an empty side (after the first epoch, or at the end)."""
        if self.read_stats.skipped_empty and not self.skips_reported:
            self.skips_reported = True
            self.log(f"skipped {self.read_stats.skipped_empty} pairs with an empty side "
                     f"{'' if self.epoch else 'so far '}(data.on_empty=error to stop on them)")

    # ---- one update ---------------------------------------------------------------------
    def train_step(self, batches: list[Batch]) -> dict:
        """One optimizer update over `batches` (gradient accumulation; with several processes, over
        every process's batches: gradients are summed by DDP); returns its figures."""
        self.model.train()
        tokens = sum(b.num_tgt_tokens for b in batches)
        if self.world.active:  # DDP averages over processes: scale so the result is sum / all tokens
            (tokens,) = sum_over_ranks([tokens], self.world, self.device)
        scale = self.world.size / tokens
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = 0.0
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            with nullcontext() if last or not self.world.active else self.trainable.no_sync():
                loss, nll = self.trainable(batch.to(self.device))
                self.scaler.scale(loss * scale).backward()
            loss_sum += float(loss.detach())
            nll_sum += float(nll.detach())
        if self.world.active:
            loss_sum, nll_sum = sum_over_ranks([loss_sum, nll_sum], self.world, self.device)
        if self.config.train.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_norm)
        self.step += 1
        lr = learning_rate(self.step, self.config.train)
        set_learning_rate(self.optimizer, lr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "tokens": int(tokens), "lr": lr}

    # ---- evaluation ---------------------------------------------------------------------
    def validate(self) -> dict:
        """Dev loss and perplexity (teacher forced), and BLEU/chrF/ROUGE-L of greedy outputs."""
        tc = self.config.train
        with tqdm(total=2 if tc.dev_bleu else 1, disable=not tc.progress, file=sys.stderr, leave=False,
                  desc="dev", unit="pass", dynamic_ncols=True) as bar:
            nll, tokens = reference_nll(self.model, self.dev_examples, tc.batch_tokens * 2, self.device)
            bar.update(1)
            figures = {"dev_loss": round(nll / max(tokens, 1), 4), "dev_ppl": round(perplexity(nll, tokens), 3)}
            if tc.dev_bleu:
                subset = self.dev_examples[: tc.dev_max_sentences]
                decode_cfg = self.config.override({"decode.beam": 1}).decode
                hyps = decode_examples(self.model, subset, decode_cfg, device=self.device)
                outputs = [self.codec.decode_target(h[0].tokens, ex.oov) for h, ex in zip(hyps, subset)]
                scores = score_outputs(outputs, self.dev_references)
                figures.update(dev_bleu=scores["bleu"], dev_chrf=scores["chrf"], dev_rougeL=scores["rougeL"])
                bar.update(1)
        return figures

    def evaluate_and_track(self, run_log: RunLog, bar: tqdm) -> dict:
        """Score the dev set, log it, keep the weights when they are the best so far, count patience."""
        dev = {"step": self.step, **self.validate()}
        run_log.write(dev)
        bar.write(" ".join(f"{k}={v}" for k, v in dev.items()), file=sys.stderr)
        if self.tracker.update(dev):
            save_best(self.out_dir, self.model, dev)
        elif self.tracker.exhausted:
            self.stopped_early = True
            bar.write(f"early stop: no better {self.tracker.key} in {self.tracker.patience} evaluations "
                      f"(best {self.best[self.tracker.key]} at step {self.best['step']})", file=sys.stderr)
        return dev

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict:
        tc = self.config.train
        stream = self.batch_stream()
        bar = tqdm(total=tc.steps, initial=self.step, disable=not (tc.progress and self.world.is_main), file=sys.stderr,
                   dynamic_ncols=True, unit="step", desc="train")
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "start": time.perf_counter()}
        last: dict = {}
        tensorboard = self.out_dir / TENSORBOARD_DIR if tc.tensorboard else None
        with RunLog(self.out_dir / LOG_FILE, tensorboard, enabled=self.world.is_main) as run_log, \
                StopRequests(self.log) as stops:
            while self.step < tc.steps and not self.stopped_early:
                figures = self.train_step([next(stream) for _ in range(tc.accumulate)])
                bar.update(1)
                for key in ("loss", "nll", "tokens"):
                    window[key] += figures[key] * (figures["tokens"] if key != "tokens" else 1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    last = self.window_figures(window, figures["lr"])
                    bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{figures['lr']:.2e}",
                                    tok_s=f"{last['tgt_tok_per_s']:.0f}")
                    run_log.write(last)
                    window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "start": time.perf_counter()}
                if self.dev_examples and tc.eval_every and (self.step % tc.eval_every == 0 or self.step == tc.steps):
                    if self.world.is_main:  # the others wait for its verdict on early stopping
                        last.update(self.evaluate_and_track(run_log, bar))
                    self.stopped_early = from_main(self.stopped_early, self.world)
                    window["start"] = time.perf_counter()  # evaluation time is not training time
                signal_number = self.agreed_signal(stops.signal_number)
                if ((tc.save_every and self.step % tc.save_every == 0) or self.step == tc.steps
                        or self.stopped_early or signal_number is not None):
                    self.save()
                    window["start"] = time.perf_counter()
                if signal_number is not None:
                    self.interrupted = signal_number
                    break
        bar.close()
        self.report_skips()
        if self.interrupted is None and self.world.is_main:
            self.write_final_weights()
        barrier(self.world)
        if self.world.active:
            self.trainable = self.objective  # DDP's reducer goes before the process group it uses
            leave_world(self.world)
        return last

    def agreed_signal(self, own: int | None) -> int | None:
        """A stop request seen by any process stops them all after the same update."""
        if not self.world.active:
            return own
        (seen,) = sum_over_ranks([1.0 if own else 0.0], self.world, self.device)
        return own or (int(signal.SIGTERM) if seen else None)

    def window_figures(self, window: dict, lr: float) -> dict:
        elapsed = time.perf_counter() - window["start"]
        loss = window["loss"] / window["tokens"]
        return {"step": self.step, "epoch": self.epoch, "loss": round(loss, 4),
                "ppl": round(math.exp(min(window["nll"] / window["tokens"], 700)), 3),
                "lr": lr, "tgt_tok_per_s": round(window["tokens"] / elapsed, 1),
                "tgt_tokens": window["tokens"], "seconds": round(elapsed, 4)}

    # ---- saving and resuming ------------------------------------------------------------
    def save(self) -> None:
        """The model folder's weights (loadable at once) and a resumable checkpoint, written by the
        first process with every process's generator states."""
        states = gather_to_main(capture_rng(), self.world)
        if not self.world.is_main:
            return
        save_weights(self.model, self.out_dir / WEIGHTS_FILE)
        state = {"epoch": self.epoch, "position": self.position.to_dict(), "tracker": self.tracker.state(),
                 "scaler": self.scaler.state_dict(), "precision": self.precision,
                 "processes": self.world.size, "kernels": self.kernels.to_dict()}
        save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, state,
                        self.config.train.keep_checkpoints, rng=pack_ranks(states))

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimizer, scaler, generators, data position, best so far."""
        state = load_checkpoint(path, self.model, self.optimizer, self.device)
        self.step = int(state["step"])
        self.position = StreamPosition.from_dict(state["position"])
        self.tracker = BestTracker(self.config.train.eval_metric, self.config.train.patience, state["tracker"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.adopt_kernels(state.get("kernels"))
        if len(state["rng"]["ranks"]) == self.world.size:
            restore_rng(*unpack_rank(state["rng_tensors"], state["rng"], self.world.rank))
        else:  # another number of processes: the data position is exact, the dropout draws are new
            torch.manual_seed(self.config.train.seed + 1000003 * self.world.rank + self.step)
            self.log(f"resuming on {self.world.size} processes a run saved by {len(state['rng']['ranks'])}: "
                     "same data position, new dropout draws")
        if self.world.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.step)
        self.log(f"resuming from {path} (step {self.step}, epoch {self.epoch})")

    def adopt_kernels(self, recorded: dict | None) -> None:
        """Compute with the kernels the run recorded, so that it goes on as it began (on another
        machine too), unless train.kernels now asks for another mode."""
        if recorded is None:
            return
        policy = kernels.KernelPolicy.from_dict(recorded)
        if policy.mode != self.kernels.mode:
            self.log(f"train.kernels: {self.kernels.mode} instead of the run's {policy.mode}: "
                     "the resumed run computes otherwise than an uninterrupted one would")
        elif policy != self.kernels:
            self.kernels = kernels.use(policy)
            self.log(f"kernels: the run's own ({policy.describe()})")

    def write_final_weights(self) -> None:
        """model.safetensors: the best dev weights (train.final_weights: best) or the last ones."""
        best = self.out_dir / CHECKPOINT_DIR / BEST_DIR / WEIGHTS_FILE
        if self.config.train.final_weights == "best" and self.best is not None and best.is_file():
            tmp = self.out_dir / (WEIGHTS_FILE + ".tmp")
            shutil.copyfile(best, tmp)
            os.replace(tmp, self.out_dir / WEIGHTS_FILE)
            self.log(f"{WEIGHTS_FILE}: the best dev weights (step {self.best['step']}, "
                     f"{self.tracker.key} {self.best[self.tracker.key]})")
        else:
            save_weights(self.model, self.out_dir / WEIGHTS_FILE)


def _silent(message: str) -> None:
    """The log of the processes other than the first in a data-parallel run."""


def clear_run(out_dir: Path) -> None:
    """--fresh: forget the checkpoints, log and events of an earlier run in the same folder."""
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    shutil.rmtree(out_dir / TENSORBOARD_DIR, ignore_errors=True)
    (out_dir / LOG_FILE).unlink(missing_ok=True)


def check_same_run(config: Config, out_dir: Path) -> None:
    """A run folder resumes only under the data and model settings it was started with."""
    try:
        saved = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{out_dir / CONFIG_FILE}: cannot read the run's config to resume it ({exc}); "
                          "use --fresh to start over") from exc
    current = config.to_dict()
    for section in ("data", "model"):
        for key, value in current[section].items():
            before = saved.get(section, {}).get(key)
            if _jsonish(before) != _jsonish(value):
                raise ConfigError(f"{out_dir}: holds a run with {section}.{key}={before!r}, not {value!r}; "
                                  "use --fresh to start over or another --out")


def _jsonish(value):
    return json.loads(json.dumps(value))


def train(config: Config, out_dir: str | Path | None = None, *, device: str = "auto", log=print,
          fresh: bool = False) -> Path:
    """`transduce.train(config[, "runs/x"])`: train (resuming a run already in the folder unless
    `fresh`) and return the model folder (by default a new folder runs/YYYYmmdd-HHMMSS)."""
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    trainer = Trainer(config, out_dir, device=device, log=log, fresh=fresh)
    trainer.fit()
    return Path(out_dir)
