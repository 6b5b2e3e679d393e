"""`transduce demo` end to end in a subprocess, on a short budget: it trains on the embedded
data, decodes the embedded test set and prints examples and a JSON report."""
import json
import os
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONIOENCODING": "utf-8"}


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "transduce", "demo", "--steps", "8", "--out", str(out), "--quiet"],
                          capture_output=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr.decode()
    stdout = proc.stdout.decode("utf-8")
    assert stdout.count("reference:") == 8 and stdout.count("model    :") == 8
    report = json.loads(stdout[stdout.index("{"): stdout.rindex("}") + 1])
    assert report["sentences"] == 100
    assert {"bleu", "chrf", "exact_match", "perplexity"} <= set(report)
    assert "tok:zh" in report["bleu_signature"]  # Chinese references are scored on characters
    for name in ("model.safetensors", "config.json", "src_vocab.json", "tgt_vocab.json", "log.jsonl"):
        assert (out / name).is_file()
