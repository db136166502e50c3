#!/usr/bin/env bash
# One prepared check of every CUDA path on one GPU machine, in under 8 minutes:
#   tl.vae (fp32 and bf16), tl.denoise (DAE), tl.lda (ProdLDA), tl.nmf on device="cuda";
#   cells/s of tl.vae vs scvi-tools SCVI on the same GPU and data (50,000 cells resampled
#   from the real built-in dataset); DDP (NCCL) through torchrun --nproc_per_node=1.
# Results go to $OUT if set, else ./gpu_check_out: results.json (every step), ddp_rank0.json,
# gpu_check.log, nvidia-smi.txt. Exit status: 0 all ok, 1 a step failed, 3 no CUDA.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --cpu-tiny   # rehearsal of every step on the CPU, a few hundred cells
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"

if [ "${1:-}" = "--cpu-tiny" ]; then
    ARGS=(--device cpu --tiny)
    MAIN_LIMIT=300
else
    ARGS=(--device cuda)
    MAIN_LIMIT=390  # + up to 60 s of DDP and imports: the whole script stays under 8 minutes
    # fail fast: without CUDA nothing below would test what this script is for
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: CUDA is not available here ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1));" \
             "run this on a GPU machine with a CUDA build of torch, or pass --cpu-tiny for a CPU rehearsal." >&2
        exit 3
    fi
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
fi

status=0
timeout "$MAIN_LIMIT" "$PY" benchmarks/gpu_check.py "${ARGS[@]}" --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then echo "gpu_check: the model steps exited with $rc (124: over ${MAIN_LIMIT} s)"; status=1; fi

# DDP: one process; see ddp_worker in gpu_check.py for how it reaches the data-parallel path
timeout 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 benchmarks/gpu_check.py \
    "${ARGS[@]}" --ddp-worker --out "$OUT" 2>&1 | tee -a "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] || [ ! -f "$OUT/ddp_rank0.json" ]; then echo "gpu_check: DDP FAILED (exit $rc)"; status=1; fi
rm -f "$OUT/ddp_cells.h5ad"

echo "gpu_check: $([ $status -eq 0 ] && echo 'all ok' || echo 'FAILED'); results in $OUT"
exit $status
