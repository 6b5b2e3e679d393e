"""The GPU benchmark script runs end to end on a CPU with a tiny model and prints the peer
script's figures, so it is known to work before a GPU is at hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_train_speed.py"
POSITIVE = ("train_tgt_tok_per_s", "model_tflops_per_s", "greedy_tok_per_s", "beam5_tok_per_s", "params")
CUDA_ONLY = ("matmul_peak_tflops_per_s", "mfu_vs_measured_peak", "peak_mem_gib", "gpu")


def test_small_run_on_cpu_prints_the_peer_figures():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small", "--threads", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["toolkit"] == "transduce" and result["dtype"] == "bf16"
    assert {"torch", "train_steps_timed", *POSITIVE, *CUDA_ONLY} <= result.keys()
    for key in POSITIVE:
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    for key in CUDA_ONLY:
        assert result[key] is None, key
