"""Prometheus metrics of the service (prometheus-client), in a registry of its own so that two
apps in one process (tests) never share counters."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests, errors, latency, decode batch sizes and output tokens (tokens/s = their rate)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("transduce_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=self.registry)
        self.errors = Counter("transduce_request_errors", "Requests answered with an error, by reason",
                              ["reason"], registry=self.registry)
        self.latency = Histogram("transduce_request_latency_seconds", "Time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("transduce_batch_size_texts", "Texts decoded together in one batch",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.texts = Counter("transduce_texts", "Texts translated", registry=self.registry)
        self.output_tokens = Counter("transduce_output_tokens", "Output tokens generated", registry=self.registry)
        self.decode_seconds = Counter("transduce_decode_seconds", "Time spent decoding batches",
                                      registry=self.registry)
        self.tokens_per_second = Gauge("transduce_tokens_per_second", "Output tokens per second of the last batch",
                                       registry=self.registry)
        self.model_loaded = Gauge("transduce_model_loaded", "1 once the model is loaded and serving",
                                  registry=self.registry)

    def batch(self, texts: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(texts)
        self.texts.inc(texts)
        self.output_tokens.inc(tokens)
        self.decode_seconds.inc(seconds)
        if seconds > 0:
            self.tokens_per_second.set(tokens / seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
