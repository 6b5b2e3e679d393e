"""`transduce quickstart` end to end: split, choose (saying why), train, test report, samples, and
the page served on 127.0.0.1."""
import json
import socket
import subprocess
import sys
import time

import httpx

from tests.csl import csl_pairs
from tests.system.serving_helpers import wait_healthy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_from_a_pairs_file_to_a_served_model(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": s, "target": t}, ensure_ascii=False) + "\n"
                             for s, t in csl_pairs(400)), encoding="utf-8")
    port, out = _free_port(), tmp_path / "qs"
    proc = subprocess.Popen([sys.executable, "-m", "transduce", "quickstart", str(pairs), "--out", str(out),
                             "--steps", "30", "--dev", "30", "--test", "30", "--quiet", "--port", str(port),
                             "--set", "model.hidden=32", "--set", "model.embed_dim=32", "--set", "train.threads=1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        url, lines_seen = f"http://127.0.0.1:{port}", []
        deadline = time.time() + 300
        while True:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines_seen)
            lines_seen.append(line)
            if "serving the model" in line:
                break
            assert time.time() < deadline, "".join(lines_seen)
        text = "".join(lines_seen)
        assert "data: 400 pairs" in text and "split by a hash" in text
        assert "tokenizer: char (" in text and "Chinese/Japanese" in text
        assert "model: lstm (" in text and "training: up to 30 updates (as asked" in text
        assert "test (" in text and "BLEU" in text and "  reference: " in text
        assert f"http://127.0.0.1:{port}/" in text
        report = json.loads((out / "test_report.json").read_text(encoding="utf-8"))
        assert report["sentences"] == sum(1 for _ in open(out / "data" / "test.tsv", encoding="utf-8")) > 0
        wait_healthy(url, proc)
        r = httpx.post(f"{url}/v1/translate", json={"texts": ["基于深度学习的方法"]})
        assert r.status_code == 200 and "results" in r.json()
        assert httpx.get(url).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
