#!/usr/bin/env bash
# Peers and transduce on the same data, one after the other (never two jobs at once: they
# would share the 2 cores and spoil the timings). Peers: ../shared/peers (build their
# environment once with ../shared/peers/setup.sh). Output: OUT/peers/results.jsonl (one line
# per peer) and OUT/transduce.jsonl (one line per benchmark).
#   bash benchmarks/compare_peers.sh [DATA_DIR] [OUT_DIR]
#   PEERS="opennmt fairseq" ARCH=lstm UPDATES=300 bash benchmarks/compare_peers.sh ../shared/data/multi30k-en-de /tmp/cmp
#   PEERS="opennmt ctranslate2 fairseq hf" ARCH=transformer CT2_TYPES=float32 bash benchmarks/compare_peers.sh ...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/peers}"
DATA="$(cd "${1:-$ROOT/../shared/data/multi30k-en-de}" && pwd)"
OUT="${2:-/tmp/transduce-compare}"
ARCH="${ARCH:-lstm}"
UPDATES="${UPDATES:-300}"
PY="${PY:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT"
for peer in ${PEERS:-opennmt fairseq}; do
    ARCHS="$ARCH" UPDATES="$UPDATES" CT2_TYPES="${CT2_TYPES:-float32}" bash "$PEERS_DIR/run_$peer.sh" "$DATA" "$OUT/peers" > "$OUT/$peer.log" 2>&1
done
: > "$OUT/transduce.jsonl"
for precision in fp32 bf16; do
    "$PY" "$HERE/train_speed.py" --arch "$ARCH" --data "$DATA" --updates "$UPDATES" --precision "$precision" \
        --work "$OUT/transduce" >> "$OUT/transduce.jsonl"
done
"$PY" "$HERE/decode_speed.py" --arch "$ARCH" --data "$DATA" --work "$OUT/transduce" >> "$OUT/transduce.jsonl"
"$PY" "$HERE/decode_scaling.py" --arch "$ARCH" --data "$DATA" --work "$OUT/transduce" >> "$OUT/transduce.jsonl"
"$PY" "$HERE/decode_scaling.py" --arch "$ARCH" --data "$DATA" --work "$OUT/transduce" --beam 5 --sentences 16 \
    >> "$OUT/transduce.jsonl"
"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
peers = [json.loads(l) for l in open(f"{out}/peers/results.jsonl")]
ours = [json.loads(l) for l in open(f"{out}/transduce.jsonl")]
for p in peers:
    name = p["peer"] + (f" {p['compute_type']}" if "compute_type" in p else "")
    train = p.get("train")
    trained = f"train {train['train_tgt_tok_per_s']:>9,.0f} tok/s  rss {train['train_peak_rss_mib']:>6,.0f} MiB" \
        if train else " " * 36
    print(f"{name:20s} {trained}  beam5 {p['beam5']['tok_per_s']:>7,.0f} tok/s ({p['beam5'].get('peak_rss_mib', 0):,.0f} MiB)"
          f"  greedy {p['greedy']['tok_per_s']:>7,.0f} tok/s ({p['greedy'].get('peak_rss_mib', 0):,.0f} MiB)")
for r in ours:
    print(json.dumps(r))
PY
