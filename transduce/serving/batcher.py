"""Dynamic batching: requests that arrive together are decoded together.

A request waits at most `max_wait` for others with the same decoding options to join it, up to
`max_batch_size` texts; the batch is decoded in one worker thread (the model decodes one batch
at a time), and each request gets back its own rows. While a batch decodes, the next requests
queue up and form the next batch at once, so under load batches fill by themselves. With
batching off every request is decoded alone, in arrival order.

Sampled requests are never mixed with others: their draws would depend on their neighbours.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transduce.config import DecodeConfig


@dataclass(frozen=True)
class BatchOptions:
    """What the requests of one batch share: the decoding settings in force (the model's, with the
    request's replacements), outputs per text, and whether attention weights come back."""

    decode: DecodeConfig
    nbest: int = 1
    attention: bool = False


@dataclass
class Job:
    texts: list[str]
    options: BatchOptions  # requests with equal options may share a batch
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def alone(self) -> bool:
        """A sampled request never shares a batch: its draws would depend on its neighbours."""
        return self.options.decode.sample


class Batcher:
    """`await batcher.submit(texts, options)` -> the rows `run(texts, options)` gives for these texts."""

    def __init__(self, run: Callable[[list[str], BatchOptions], list], *, max_batch_size: int = 32,
                 max_wait_s: float = 0.005, enabled: bool = True,
                 on_batch: Callable[[int, float], None] | None = None):
        """`run(texts, options)` decodes one batch (called in the worker thread); `on_batch(texts,
        seconds)` is told about each batch (metrics)."""
        self.run, self.max_batch_size, self.max_wait_s, self.enabled = run, max_batch_size, max_wait_s, enabled
        self.on_batch = on_batch
        self.queue: asyncio.Queue[Job] | None = None
        self.held: deque[Job] = deque()  # taken from the queue but left for the next batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str], options: BatchOptions) -> list:
        job = Job(list(texts), options, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    def _ready_job(self) -> Job | None:
        """A request already waiting (set aside earlier, or queued), without waiting."""
        if self.held:
            return self.held.popleft()
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _gather(self) -> list[Job]:
        """One batch: the oldest waiting request, the compatible ones already waiting, and those
        arriving before its deadline."""
        first = self._ready_job() or await self.queue.get()
        batch, size = [first], len(first.texts)
        if not self.enabled or first.alone or size >= self.max_batch_size:
            return batch
        deadline = first.arrived + self.max_wait_s
        passed_over: list[Job] = []
        while size < self.max_batch_size and len(passed_over) <= 4 * self.max_batch_size:
            job = self._ready_job()
            if job is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if job.options == first.options and not job.alone and size + len(job.texts) <= self.max_batch_size:
                batch.append(job)
                size += len(job.texts)
            else:
                passed_over.append(job)
        self.held.extendleft(reversed(passed_over))  # they keep their place in line
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._gather() if not job.future.done()]  # drop timed-out requests
            if not batch:
                continue
            texts = [text for job in batch for text in job.texts]
            start = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self.executor, self.run, texts, batch[0].options)
            except Exception as exc:  # the requests fail, the service goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(texts), time.perf_counter() - start)
            offset = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(rows[offset: offset + len(job.texts)])
                offset += len(job.texts)
