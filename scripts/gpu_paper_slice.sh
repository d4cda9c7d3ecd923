#!/usr/bin/env bash
# One slice of the paper-scale audit on a CUDA machine, inside a fixed time budget.
#
#   scripts/gpu_paper_slice.sh [--out DIR] [--data-root DIR] [--budget SECONDS] [--seeds N] [--first-seed S]
#
# The whole paper-scale audit (scripts/gpu_paper_scale.sh) is thousands of cells. This runs the
# part of it that says the most per minute, at the paper's own sizes, on MNIST:
#   1. NTK distance vs width, the paper's protocol (Adam, 500 epochs): n = 1000, 500 test points,
#      widths 4..4096, ReLU and MLP-Attn, seeds S..S+N-1 (paper: 5; default here 0 and 1);
#   2. the same under the lazy protocol (full-batch GD from the NTK initialisation), the causal control;
#   3. Table 2's flip rates (FGSM, PGD, MIM at ε = 0.3, width 1024, n = 1000, 200 test points).
# Each step runs one seed at a time under what is left of the budget, so a step cut short keeps
# every seed it finished; a step with all its seeds is rewritten as one file over all of them
# (from the cell cache, no recomputation). Writes into DIR (default reports/gpu-paper-slice):
# machine.txt, ntk-mnist-paper.json, ntk-mnist-lazy.json, flip-mnist.json (or their -seedS parts),
# and log.txt with each step's wall time. Exit 0 when every step finished inside the budget.
set -uo pipefail

die() { echo "error: $*" >&2; exit 2; }
cd "$(dirname "$0")/.." || die "cannot enter the repository root"
out="reports/gpu-paper-slice"
data_root="${MALLEABILITY_DATA:-}"
budget=480
seeds=2
first_seed=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a folder"; out="$2"; shift ;;
        --data-root) [ $# -ge 2 ] || die "--data-root needs a folder"; data_root="$2"; shift ;;
        --budget) [ $# -ge 2 ] || die "--budget needs seconds"; budget="$2"; shift ;;
        --seeds) [ $# -ge 2 ] || die "--seeds needs a count"; seeds="$2"; shift ;;
        --first-seed) [ $# -ge 2 ] || die "--first-seed needs a seed"; first_seed="$2"; shift ;;
        -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[[ "$budget" =~ ^[0-9]+$ ]] && [ "$budget" -ge 1 ] || die "--budget must be a whole number of seconds >= 1, got $budget"
[[ "$seeds" =~ ^[0-9]+$ ]] && [ "$seeds" -ge 1 ] || die "--seeds must be a count >= 1, got $seeds"
[[ "$first_seed" =~ ^[0-9]+$ ]] || die "--first-seed must be a seed >= 0, got $first_seed"
python="${PYTHON:-python3}"
if command -v malleability >/dev/null 2>&1; then cli=(malleability); else cli=("$python" -m malleability.reports.cli); fi
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || die "no CUDA device visible (torch.cuda.is_available() is False)"
mkdir -p "$out" || die "cannot create $out"
cache="${MALLEABILITY_CACHE_DIR:-$out/.cells}"
[ -z "$data_root" ] || export MALLEABILITY_DATA="$data_root"
start=$(date +%s)
status=0
log() { echo "$*" | tee -a "$out/log.txt" >&2; }
left() { echo $(( budget - ($(date +%s) - start) )); }

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: ${MALLEABILITY_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not found"
    "$python" -c "import torch, platform; p = torch.cuda.get_device_properties(0); print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, device {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs')"
    echo "cpu cores: $(nproc --all)"
} > "$out/machine.txt"

# run NAME ARGS...: one experiment, seed by seed under the budget, then merged over the seeds it finished
run() {
    local name="$1"; shift
    local done_seeds=()
    for ((s = first_seed; s < first_seed + seeds; s++)); do
        local t; t=$(left)
        if [ "$t" -lt 10 ]; then log "$name seed $s: not started, budget spent"; status=3; break; fi
        local t0; t0=$(date +%s)
        timeout -s INT "$t" "${cli[@]}" "$@" --seeds "$s," --device cuda --cache-dir "$cache" --json \
            > "$out/$name-seed$s.json" 2>> "$out/log.txt"
        local rc=$?
        if [ "$rc" -ne 0 ]; then
            rm -f "$out/$name-seed$s.json"; log "$name seed $s: stopped (exit $rc) after $(( $(date +%s) - t0 )) s"
            status=3; break
        fi
        done_seeds+=("$s"); log "$name seed $s: $(( $(date +%s) - t0 )) s"
    done
    [ "${#done_seeds[@]}" -ge 1 ] || return 0
    local list; list=$(IFS=,; echo "${done_seeds[*]}")
    if "${cli[@]}" "$@" --seeds "$list," --device cuda --cache-dir "$cache" --json > "$out/$name.json" 2>> "$out/log.txt"; then
        for s in "${done_seeds[@]}"; do rm -f "$out/$name-seed$s.json"; done
        log "$name: seeds $list in $out/$name.json"
    else
        rm -f "$out/$name.json"
    fi
}

ntk=(ntk-distance --dataset mnist --n 1000 --n-test 500 --widths default --models relu,mlp-attn --epochs 500)
run ntk-mnist-paper "${ntk[@]}" --protocol paper
run ntk-mnist-lazy "${ntk[@]}" --protocol lazy
run flip-mnist flip-rate --dataset mnist --n 1000 --n-test 200 --width 1024 --epochs 500 --attack fgsm,pgd,mim --eps 0.3
log "total $(( $(date +%s) - start )) s of a $budget s budget (exit $status)"
exit "$status"
