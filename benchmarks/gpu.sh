#!/usr/bin/env bash
# Issue 14's GPU checks in one go, on a machine with a CUDA GPU and no network (docs/performance.md).
#
#   MODEL_DIR=~/.cache/mlinguality/gemma-3-270m CORPUS=verses.tsv OUT=gpu-out bash benchmarks/gpu.sh
#
# MODEL_DIR holds a config.json and a tokenizer (Gemma 3 270M's: the weights are drawn at random on
# the CPU with a fixed seed, so the CPU and the GPU see the same weights); CORPUS is a TSV with the
# columns en, en:WEB, fr, de, ru, hi, zh (mlinguality corpus formats). Steps, each under its own time
# limit, all logged to OUT/steps.log (a failed step does not stop the next):
#   1. gpu_check.py: the collect/forward sweep (fp32, bf16), CPU agreement, a profile;
#   2. the main job (experiments/configs/paper.yaml) on cuda in fp32, its tables to OUT;
#   3. gpu_check.py: memory and tokens/s per model shape;
#   4. the main job in bf16; 5. bench_collect.py (c) and (d) in fp32 and bf16.
# DEVICE=cpu DRY_RUN=1 runs the same steps on small shapes and a few verses (to test this script).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
SCRATCH=${SCRATCH:-/tmp/mlinguality-gpu}
MODEL_DIR=${MODEL_DIR:-$HOME/.cache/mlinguality/gemma-3-270m}
CORPUS=${CORPUS:-bible}
PLANS=${PLANS:-4096/64,16384/256,32768/512,32768/1024}
THREADS=${THREADS:-16}
VERSES=${VERSES:-200}  # verses per language of the sweep and the sizes
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$SCRATCH"
status=0

DEADLINE=${DEADLINE:-100000}  # seconds for the whole script: later steps get what is left
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log appended to OUT/steps.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    [ $((DEADLINE - SECONDS)) -lt "$limit" ] && limit=$((DEADLINE - SECONDS))
    if [ "$limit" -lt 20 ]; then echo "== $name: skipped, out of time"; status=1; return; fi
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$SCRATCH/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc, $((SECONDS - start)) s"
    { echo "=== $name: rc=$rc, $((SECONDS - start)) s: $*"; grep -v 'it/s]\|tok/s]' "$SCRATCH/$name.log"
    } >>"$OUT/steps.log"
    [ $rc -eq 0 ] || status=1
}

if [ "${DRY_RUN:-0}" = 1 ]; then
    SHRINK=(--shrink --agree-verses 8)
    SMALL=(--verses 12 --repeats 1)
    SPEC="random:$MODEL_DIR:num_hidden_layers=3,layer_types=[\"sliding_attention\",\"sliding_attention\",\"sliding_attention\"]"
    JOB=(corpus.limit=24 ablation.eval_limit=4 selectivity.n_permutations=10 selectivity.n_bootstrap=5)
else
    SHRINK=(--verses "$VERSES")
    SMALL=()
    SPEC="random:$MODEL_DIR"
    JOB=()
fi
CHECK=(python benchmarks/gpu_check.py --device "$DEVICE" --model "$SPEC" --corpus "$CORPUS"
       --threads "$THREADS" --plans "$PLANS" --scratch "$SCRATCH" "${SHRINK[@]}" "${SMALL[@]}")

# the random weights as a model folder, for the main job (load_model takes any HF folder)
step save 120 python - "$SPEC" "$SCRATCH/random-model" <<'EOF'
import sys
sys.path.insert(0, "benchmarks")
from common import random_hf_model
hf_model, tokenizer = random_hf_model(sys.argv[1].removeprefix("random:"))
print("weights checksum (sum of |w|):", sum(p.double().abs().sum().item() for p in hf_model.parameters()))
hf_model.save_pretrained(sys.argv[2])
tokenizer.save_pretrained(sys.argv[2])
EOF

step check 240 "${CHECK[@]}" --sections sweep,agree,profile

for dtype in float32 bfloat16; do  # the main job, its tables to OUT/run-DTYPE.tar.gz
    [ "$dtype" = bfloat16 ] && step sizes 150 "${CHECK[@]}" --sections sizes --repeats 1
    runs="$SCRATCH/runs-$dtype"
    rm -rf "$runs"
    step "main-$dtype" 150 python -m mlinguality run experiments/configs/paper.yaml --set \
        "model.spec=$SCRATCH/random-model" "model.device=$DEVICE" "model.dtype=$dtype" \
        "corpus.source=$CORPUS" tracking.wandb=disabled "output_dir=$runs" "cache_dir=$runs/.cache" \
        collection.batch_tokens=32768 ablation.batch_tokens=8192 "${JOB[@]}"
    [ -d "$runs" ] && tar -czf "$OUT/run-$dtype.tar.gz" -C "$runs" --exclude .cache \
        --exclude '*.safetensors' --exclude '*.pt' .
done
for dtype in float32 bfloat16; do
    step "bench-collect-$dtype" 60 python benchmarks/bench_collect.py --device "$DEVICE" \
        --dtype "$dtype" --threads "$THREADS" --skip-rss --model "$SPEC" --corpus "$CORPUS" \
        --batch-tokens 32768 --max-batch-size 512 "${SMALL[@]}"
done
exit $status
