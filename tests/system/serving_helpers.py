"""A tiny trained model and a real uvicorn server on 127.0.0.1 for the serving tests."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from tests.csl import csl_pairs, write_tsv
from transduce.config import Config, ServeConfig
from transduce.serving.app import create_app
from transduce.training.trainer import Trainer


def train_tiny_model(root: Path) -> Path:
    """A one-layer LSTM on 300 CSL titles (a few seconds); it outputs Chinese characters."""
    write_tsv(root / "train.tsv", csl_pairs(300))
    config = Config.from_dict({
        "data": {"train": str(root / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {"embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0,
                  "share_embeddings": True},
        "train": {"steps": 40, "batch_tokens": 800, "lr": 3e-3, "warmup": 5, "eval_every": 0, "save_every": 40,
                  "threads": 1, "progress": False},
        "decode": {"beam": 2, "max_length": 16},
    })
    out = root / "model"
    Trainer(config, out, device="cpu", log=lambda m: None).fit()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, settings: ServeConfig | None = None, **app_options):
    """create_app served by uvicorn in a thread on 127.0.0.1; yields the base URL."""
    port = free_port()
    app = create_app(model_dir, settings or ServeConfig(), **app_options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while httpx.get(f"{url}/health").status_code != 200:
        assert time.time() < deadline, "model never became ready"
        time.sleep(0.05)


def wait_healthy(url: str, proc, timeout: float = 60) -> None:
    """Wait for a server started as a process (`proc`) to answer /health with 200."""
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.time() < deadline, "the server did not become healthy"
        time.sleep(0.1)
