"""The HTTP service, on a real uvicorn server on 127.0.0.1: translation equals the Python API,
concurrent requests are batched and answered as if alone, every limit answers a clear JSON
error and the server keeps serving, health follows loading, metrics move, the CLI serves."""
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.system.serving_helpers import (
    free_port,
    running_server,
    train_tiny_model,
    wait_healthy,
    wait_ready,
)
from transduce.config import ServeConfig
from transduce.inference import Translator, TranslatorBase

TEXTS = ["基于深度学习的图像识别方法", "一种新的网络安全模型", "面向大数据的分布式存储系统设计", "数据", "本文提出了一种算法"]



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def reference(model_dir):
    return Translator.from_dir(model_dir, device="cpu")


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_translate_matches_the_python_api_with_nbest_scores_and_attention(model_dir, reference):
    with running_server(model_dir) as url:
        wait_ready(url)
        r = httpx.post(f"{url}/v1/translate", json={"texts": TEXTS[:2], "beam": 3, "nbest": 2, "attention": True})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = reference.translate_nbest(TEXTS[:2], nbest=2, beam=3, attention=True)
        assert len(body["results"]) == 2
        for result, row in zip(body["results"], expected):
            assert [o["text"] for o in result["outputs"]] == [t.text for t in row]
            assert [o["score"] for o in result["outputs"]] == pytest.approx([t.score for t in row], abs=1e-5)
            assert result["source_tokens"] == row[0].source_tokens
            attention = result["outputs"][0]["attention"]
            assert len(attention) == len(result["outputs"][0]["tokens"]) + 1
            assert all(len(a) == len(result["source_tokens"]) for a in attention)
            assert all(abs(sum(a) - 1) < 1e-3 for a in attention)
        assert httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/translate"]["post"]


def test_concurrent_requests_are_batched_and_answered_as_if_alone(model_dir, reference):
    settings = ServeConfig(max_batch_size=16, max_wait_ms=200)
    single = {t: reference.translate([t], beam=2)[0] for t in TEXTS}
    with running_server(model_dir, settings) as url:
        wait_ready(url)
        barrier = threading.Barrier(10)

        def one(i):
            text = TEXTS[i % len(TEXTS)]
            barrier.wait()
            # half name the model's own beam (2), half leave it out: the same settings, one batch
            body = {"texts": [text], "beam": 2} if i % 2 else {"texts": [text]}
            return text, httpx.post(f"{url}/v1/translate", json=body, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(one, range(10)))
        for text, r in answers:
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["outputs"][0]["text"] == single[text]
        metrics = httpx.get(f"{url}/metrics").text
        batches = _metric(metrics, "transduce_batch_size_texts_count")
        assert _metric(metrics, "transduce_batch_size_texts_sum") == 10
        assert batches < 10, metrics  # some requests shared a batch
        assert _metric(metrics, "transduce_requests_total", route="/v1/translate", status="200") == 10
        assert _metric(metrics, "transduce_output_tokens_total") > 0


def test_without_batching_each_request_is_its_own_batch(model_dir):
    with running_server(model_dir, ServeConfig(batching=False)) as url:
        wait_ready(url)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda t: httpx.post(f"{url}/v1/translate", json={"texts": [t]}).status_code,
                                  TEXTS + [TEXTS[0]]))
        assert codes == [200] * 6
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "transduce_batch_size_texts_count") == 6


def test_every_limit_answers_json_and_the_server_goes_on(model_dir):
    settings = ServeConfig(max_texts=3, max_input_chars=50, max_body_bytes=2000)
    with running_server(model_dir, settings) as url:
        wait_ready(url)
        good = {"texts": [TEXTS[0]]}
        cases = [
            ({"json": {"texts": ["x" * 10] * 300}}, 413, "over 2000 bytes"),
            ({"content": b"{" + b" " * 5000 + b"}", "headers": {"content-type": "application/json"}}, 413, "bytes"),
            ({"json": {"texts": ["a", "b", "c", "d"]}}, 422, "at most 3"),
            ({"json": {"texts": ["長" * 51]}}, 422, "texts[0]: 51 characters"),
            ({"json": {"texts": ["a"], "beem": 3}}, 422, "beem: Extra inputs are not permitted"),
            ({"json": {"texts": ["a"], "beam": "wide"}}, 422, "beam"),
            ({"json": {"texts": ["a"], "beam": 0}}, 422, "beam"),
            ({"json": {"texts": []}}, 422, "texts"),
            ({"json": {"texts": ["a"], "min_length": 9, "max_length": 3}}, 422, "min_length"),
            ({"content": b"not json", "headers": {"content-type": "application/json"}}, 422, ""),
            ({"json": {"texts": ["a"], "model": "/etc/passwd"}}, 422, "model: Extra inputs"),
            ({"json": {"texts": ["a"], "beam": 33}}, 422, "beam: Input should be less than or equal to 32"),
            ({"json": {"texts": ["a"], "batch_size": 4}}, 422, "batch_size: Extra inputs"),
        ]
        for request, status, words in cases:
            r = httpx.post(f"{url}/v1/translate", **request)
            assert r.status_code == status, (request, r.text)
            assert words in r.json()["error"], (request, r.text)
            assert httpx.post(f"{url}/v1/translate", json=good).status_code == 200  # still serving
        assert httpx.get(f"{url}/nothing-here").status_code == 404
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "transduce_request_errors_total", reason="body_too_large") == 2
        assert _metric(metrics, "transduce_request_errors_total", reason="too_many_texts") == 1
        assert _metric(metrics, "transduce_requests_total", route="/v1/translate", status="422") == 11


def test_api_key_is_required_when_set(model_dir):
    with running_server(model_dir, api_key="s3cret") as url:
        wait_ready(url)
        assert httpx.get(f"{url}/health").json()["api_key_required"] is True
        assert httpx.post(f"{url}/v1/translate", json={"texts": ["a"]}).status_code == 401
        wrong = httpx.post(f"{url}/v1/translate", json={"texts": ["a"]}, headers={"x-api-key": "guess"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        for headers in ({"x-api-key": "s3cret"}, {"authorization": "Bearer s3cret"}):
            assert httpx.post(f"{url}/v1/translate", json={"texts": ["a"]}, headers=headers).status_code == 200


class _Slow(TranslatorBase):
    """A translator that takes its time (for loading and timeout tests)."""

    def __init__(self, inner, seconds):
        self.inner, self.seconds, self.config = inner, seconds, inner.config

    def translate_nbest(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.inner.translate_nbest(*args, **kwargs)


def test_health_is_503_while_loading_and_a_slow_request_times_out(model_dir, reference):
    loaded = threading.Event()

    def load():
        loaded.wait(30)
        return _Slow(reference, 1.5)

    with running_server(model_dir, ServeConfig(timeout_s=0.5), load=load) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        early = httpx.post(f"{url}/v1/translate", json={"texts": ["a"]})
        assert early.status_code == 503 and "loading" in early.json()["error"]
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "transduce_model_loaded") == 0
        loaded.set()
        wait_ready(url)
        assert _metric(httpx.get(f"{url}/metrics").text, "transduce_model_loaded") == 1
        slow = httpx.post(f"{url}/v1/translate", json={"texts": ["a"]}, timeout=10)
        assert slow.status_code == 504 and "within 0.5 s" in slow.json()["error"]


def test_a_model_that_cannot_load_is_reported_by_health(tmp_path):
    with running_server(tmp_path) as url:
        deadline = time.time() + 10
        while httpx.get(f"{url}/health").json()["status"] == "loading":
            assert time.time() < deadline
            time.sleep(0.05)
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and "not a model folder" in r.json()["error"]
        assert httpx.post(f"{url}/v1/translate", json={"texts": ["a"]}).status_code == 503


def test_the_cli_serves_on_loopback_and_refuses_a_wide_bind_without_a_key(model_dir):
    refused = subprocess.run([sys.executable, "-m", "transduce", "serve", "--model", str(model_dir), "--host",
                              "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--api-key" in refused.stderr

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "transduce", "serve", "--model", str(model_dir), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        r = httpx.post(f"{url}/v1/translate", json={"texts": TEXTS[:1]})
        assert r.status_code == 200 and r.json()["results"][0]["outputs"][0]["text"]
        page = httpx.get(url)
        assert page.status_code == 200 and "<canvas" in page.text
        assert re.search(r"transduce_requests_total\{.*status=\"200\"", httpx.get(f"{url}/metrics").text)
        assert json.loads(httpx.get(f"{url}/openapi.json").text)["info"]["title"] == "transduce"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_fuzzing_the_api_from_its_openapi_schema_finds_no_server_error(model_dir, tmp_path):
    """schemathesis generates requests from /openapi.json (valid and invalid); none may get a 5xx."""
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        pytest.fail("schemathesis is a test dependency: pip install -e '.[test]'")
    with running_server(model_dir, ServeConfig(max_texts=8, max_input_chars=200)) as url:
        wait_ready(url)
        proc = subprocess.run([schemathesis, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                               "--max-examples", "60", "--seed", "7"], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert re.search(r"\d+ generated, \d+ passed", proc.stdout), proc.stdout[-2000:]
