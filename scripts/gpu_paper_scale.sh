#!/usr/bin/env bash
# The paper-scale audit on a CUDA machine, with the benchmarks and a note of the machine.
#
#   scripts/gpu_paper_scale.sh [--dry-run] [--out DIR] [--data-root DIR] [-- AUDIT-OPTIONS...]
#
# Writes into DIR (default reports/gpu-paper-scale): machine.txt (card, driver, torch, CUDA,
# commit), bench-ntk.json, bench-influence.json, then the audit's report.md/html and
# results.json. The benchmarks come first: they take minutes, the audit hours, and a rerun
# resumes the audit from the cell cache. AUDIT-OPTIONS go to `malleability audit` unchanged
# (e.g. --cache-dir DIR, or --override FIELD=VALUE for a smoke test).
#
# --dry-run: print the plan (cells per kind) and the cost model's time estimate, run nothing,
# write nothing, exit 0; needs no GPU. Without it, no visible CUDA device is an error (exit 2).
# Exit status: 0 when every step succeeded, else the first failing step's status.
set -uo pipefail

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
die() { echo "error: $*" >&2; exit 2; }

cd "$(dirname "$0")/.." || die "cannot enter the repository root"
out="reports/gpu-paper-scale"
data_root=""
dry_run=0
audit_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) [ $# -ge 2 ] && [ -n "$2" ] || die "--out needs a folder"; out="$2"; shift ;;
        --out=*) out="${1#--out=}"; [ -n "$out" ] || die "--out needs a folder" ;;
        --data-root) [ $# -ge 2 ] && [ -n "$2" ] || die "--data-root needs a folder"; data_root="$2"; shift ;;
        --data-root=*) data_root="${1#--data-root=}"; [ -n "$data_root" ] || die "--data-root needs a folder" ;;
        -h|--help) usage; exit 0 ;;
        --) shift; audit_args=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "no $python on PATH (activate the virtual environment or set PYTHON)"
if command -v malleability >/dev/null 2>&1; then
    cli=(malleability)
else
    cli=("$python" -m malleability.reports.cli)
fi
[ -z "$data_root" ] || audit_args=(--data-root "$data_root" "${audit_args[@]}")

if [ "$dry_run" = 1 ]; then
    # The plan and the estimate from the audit's own planner and cost model (pure: builds configs only).
    exec "$python" - "${audit_args[@]}" <<'PY'
import collections
import sys

from malleability.errors import MalleabilityError
from malleability.reports.audit import get_scale
from malleability.reports.audit.cost_model import CUDA_MEASURED_ON, on_cuda
from malleability.reports.audit.plan import cell_seconds, estimate_seconds, plan_cells

args, overrides, data_root = sys.argv[1:], [], None
for i, a in enumerate(args):  # the audit options that change the plan
    nxt = args[i + 1] if i + 1 < len(args) else None
    if a == "--override" and nxt is not None:
        overrides.append(nxt)
    elif a.startswith("--override="):
        overrides.append(a.split("=", 1)[1])
    elif a == "--data-root" and nxt is not None:
        data_root = nxt
try:
    plan = plan_cells(get_scale("paper", tuple(overrides)), device="cuda", data_root=data_root)
except MalleabilityError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
cells = plan.cells
kinds = collections.Counter(c.kind for c in cells)
print(f"plan: scale paper, device cuda, {len(cells)} cells")
for kind in sorted(kinds):
    own = [c for c in cells if c.kind == kind]
    where = "on the GPU" if any(on_cuda(c) for c in own) else "on one CPU thread"
    print(f"  {kind}: {kinds[kind]} cells, {sum(map(cell_seconds, own)) / 3600:.2f} h {where}")
one = estimate_seconds(cells, 1)
print(f"estimate: {one / 3600:.2f} h on 1 worker (the audit's default on cuda)")
print(f"  (the cost model of the cells that train, measured on {CUDA_MEASURED_ON};")
print("   another card, a busy one or another torch differs: the progress lines correct the estimate as cells finish)")
print("dry run: nothing run, nothing written")
PY
fi

"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)" \
    2>/dev/null || die "no CUDA device visible (torch.cuda.is_available() is False); --dry-run shows the plan without one"

mkdir -p "$out" || die "cannot create $out"
status=0
step() {  # run one step, keep the first failure's status, go on with the others
    local name="$1"; shift
    echo "== $name: $*" >&2
    "$@"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== $name failed (exit $rc)" >&2
        [ "$status" -ne 0 ] || status=$rc
    fi
    return 0
}

machine() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname)"
    if [ -n "${MALLEABILITY_GIT_COMMIT:-}" ]; then  # a copied tree: its .git may be missing or stale
        echo "commit: $MALLEABILITY_GIT_COMMIT (MALLEABILITY_GIT_COMMIT)"
    else
        echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total --format=csv
        nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver: /'
    else
        echo "nvidia-smi: not found"
    fi
    "$python" - <<'PY'
import torch

print(f"torch: {torch.__version__}")
print(f"cuda (torch built with): {torch.version.cuda}")
print(f"cudnn: {torch.backends.cudnn.version()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
PY
    echo "cpu cores: $(nproc)"
}

into() { local file="$1"; shift; "$@" > "$file"; }  # a step's stdout into a file of the output folder
step machine.txt into "$out/machine.txt" machine
step "bench ntk" into "$out/bench-ntk.json" "${cli[@]}" bench ntk --json
step "bench influence" into "$out/bench-influence.json" "${cli[@]}" bench influence --json
step audit "${cli[@]}" audit --scale paper --device cuda --out "$out" "${audit_args[@]}"
echo "wrote $out (exit $status)" >&2
exit "$status"
