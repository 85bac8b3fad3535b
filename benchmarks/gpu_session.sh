#!/usr/bin/env bash
# Every GPU measurement of this project in one call on a lent GPU machine (the device tool: Python
# 3.12 with CUDA torch, no RDKit, no deepchem, nothing to download). Prepare here, once per session:
#
#     bash scripts/prepare_gpu_carry.sh          # .gpu_carry/: RDKit cp312 wheel + deepchem tarball
#     run(command="bash benchmarks/gpu_session.sh", carry=[".gpu_carry"], timeout_s=590)
#
# What it runs, in order, within GPU_SESSION_SECONDS (default 540 s of wall time):
#   1. the CUDA-only tests (fast step on the GPU against the CPU reference; official preset on CUDA;
#      no host synchronisation in a step; the captured step replayed as a CUDA graph against the eager step);
#   2. benchmarks/speed.py --only gpu: reference vs one-batch fast path, eager and replayed as a CUDA
#      graph (model.cuda_graph), s / outer step and per evaluation (issue targets: <= 0.1 s per step,
#      2,000 Tox21 steps in < 5 min), then benchmarks/profile_step.py, eager and replayed: kernel launches,
#      host syncs and GPU kernel time per step (benchmarks/cuda_graph_probe.py, which answered whether a step captures
#      at all, is no longer run: the captured step is now measured in speed.py);
#   3. the backlog of meta-trained cells that a CPU takes hours for, in order, several side by side,
#      until the time is spent (a cell is written when it is finished; a rerun skips finished cells, but
#      the machine starts bare: copy the returned cells in before the next session): the ToxCast groups
#      without a Pin-Tuning cell (seed 0, 500 steps); with replayed steps only, Tox21 and SIDER at the
#      paper's 2,000 steps (both shot counts, 3 seeds; Tox21 10-shot exists and is skipped); the Tox21
#      10-shot ablations (issue 17), MUV at 500 steps and MUV's Table 2 adapter ablations at 500 steps,
#      these three with 10 evaluations, as their CPU cells (MUV seed 0 is one); then MUV and the ToxCast
#      groups at 5 shots (seed 0, 500 steps). All with 5 support draws, the others with the paper's 20
#      evaluations, and with --cuda-graph when the captured step's CUDA test passed (each cell counts
#      its replayed steps).
# Everything lands in $OUT (at most 8 files come back): gpu_session.log (the CUDA tests' output included),
# speed_gpu.{json,md}, profile_gpu{,_graph}.json, cells.tgz (fewshot_table/ and ablations/ cells). Back here:
# tar xzf cells.tgz -C benchmarks/results, then fewshot_table.py --report-only and ablations.py
# --report-only; keep speed_gpu.* beside speed.json (it is the GPU half of the speed report).
set -uo pipefail
: "${OUT:?OUT must name the folder for the results}"
budget=${GPU_SESSION_SECONDS:-540}
start=$(date +%s)
exec > >(tee "$OUT/gpu_session.log") 2>&1
elapsed() { echo $(( $(date +%s) - start )); }

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_carry/*.whl || exit 1
tar xzf .gpu_carry/deepchem.tgz -C /tmp/site || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PINTUNING_CACHE_DIR=/tmp/pintuning-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, rdkit, deepchem_pintuning; print("torch", torch.__version__, torch.cuda.get_device_name())' || exit 1

echo "== [$(elapsed) s] CUDA tests"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_fast_path.py tests/test_pintuning.py \
    -k "gpu or cuda" 2>&1 | tail -n 40
echo "pytest exit status ${PIPESTATUS[0]}"
# the backlog replays its steps as CUDA graphs only if the replay equals the eager step here
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_captured_step.py -k gpu 2>&1 | tail -n 30
replay=${PIPESTATUS[0]}
graph=()
(( replay == 0 )) && graph=(--cuda-graph)
echo "captured-step test exit status $replay: the backlog runs ${graph[*]:-eagerly}"

echo "== [$(elapsed) s] speed.py --only gpu"
python3 benchmarks/speed.py --only gpu --steps 8 --rounds 1 --out "$OUT/speed_gpu.json" \
    --note "lent GPU machine, one process at a time, nothing else running (benchmarks/gpu_session.sh)" \
    || echo "speed.py failed (exit status $?); the Tox21 runs go on at a guessed budget"

echo "== [$(elapsed) s] profile_step.py"
python3 benchmarks/profile_step.py "$OUT/profile_gpu.json" || echo "profile_step.py failed (exit status $?)"
python3 benchmarks/profile_step.py --cuda-graph "$OUT/profile_gpu_graph.json" \
    || echo "profile_step.py --cuda-graph failed (exit status $?)"

# the backlog: each command is stopped before the call's limit, so that this log and the finished cells come back
cells=/tmp/cells
mkdir -p "$cells/fewshot_table" "$cells/ablations"
cp benchmarks/results/fewshot_table/*.json "$cells/fewshot_table/"      # finished cells are skipped
cp benchmarks/results/ablations/*.json "$cells/ablations/"
find "$cells" -name '*.json' > /tmp/cells_before
common=(--evaluations 20 --draws 5 --checkpoint-dir /tmp/checkpoints)
backlog=("fewshot_table.py --datasets toxcast-BSK toxcast-NVS toxcast-ATG toxcast-TOX21 --shots 10 --steps 500
          --methods pintuning --seeds 0 --processes 4")
if (( ${#graph[@]} )); then   # the paper's 2,000 steps fit a session only with replayed steps
    backlog+=("fewshot_table.py --datasets sider tox21 --shots 10 5 --steps 2000 --methods pintuning --seeds 0 1 2
               --processes 6")
fi
backlog+=("ablations.py --datasets tox21 --shots 10 --steps 500 --seeds 0 1 2 --processes 6 --evaluations 10"
          "fewshot_table.py --datasets muv --shots 10 --steps 500 --methods pintuning --seeds 0 1 2 --processes 3
           --evaluations 10"
          "ablations.py --datasets muv --shots 10 --steps 500 --seeds 0 1 2 --variants full no_adapter no_context
           --processes 6 --evaluations 10"
          "fewshot_table.py --datasets muv toxcast --shots 5 --steps 500 --methods pintuning --seeds 0 --processes 6")
for item in "${backlog[@]}"; do
    left=$(( budget - 20 - $(elapsed) ))
    (( left > 60 )) || break
    script=${item%% *} name=${script%.py}
    echo "== [$(elapsed) s] $item (${left} s left)"
    # an item's own options come last: they override the common ones
    timeout "$left" python3 "benchmarks/$script" "${common[@]}" ${item#* } "${graph[@]}" --cell-dir "$cells/$name" \
        --out "/tmp/$name.json" > "/tmp/$name.log" 2>&1
    grep -E ": (done|FAILED)" "/tmp/$name.log"
done
find "$cells" -name '*.json' | sort | comm -13 <(sort /tmp/cells_before) - | sed "s#^$cells/##" > /tmp/cells_new
echo "$(wc -l < /tmp/cells_new) new cells"
tar czf "$OUT/cells.tgz" -C "$cells" -T /tmp/cells_new
echo "== [$(elapsed) s] done"
