"""Where one fast-path outer step of Pin-Tuning spends its time: torch.profiler over two steps.

Tox21 10-shot, paper preset, shipped GCN, on the GPU when there is one (all episodes of a step in
one batch) and else on one CPU thread. Writes a JSON with the unprofiled seconds per step (three
steps inside one ``fit`` call, the final checkpoint included), and from the profiled steps: CPU
time of the operators, and on a GPU the kernel launches, host-device copies and stream
synchronisations per step (without those of the checkpoint save that ends ``fit``, profiled on its own),
the GPU kernel time per step and the top operators. It also counts the step's floating-point
operations (``torch.utils.flop_counter``: dense products, forward and both backward orders; the
sparse message-passing products are not counted and are a small share) and times a plain dense
matrix product of the step's typical shape on the same device, so that the step's arithmetic rate
can be read against what the device sustains::

    python benchmarks/profile_step.py benchmarks/results/profile_gpu.json    # benchmarks/gpu_session.sh
    python benchmarks/profile_step.py --cuda-graph benchmarks/results/profile_gpu_graph.json
    OMP_NUM_THREADS=1 python benchmarks/profile_step.py benchmarks/results/profile_cpu.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import CPU_CONFIGS, FAST_GPU, GPU_CONFIGS, warmed_up_model  # noqa: E402

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaMemcpyAsync", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def matmul_gflops(device: torch.device, sync, repeats: int = 200) -> float:
    """GFLOP/s of a float32 product of an encoder layer's shape (1,024 atoms x 300 by 300 x 300)."""
    a = torch.randn(1024, 300, device=device)
    b = torch.randn(300, 300, device=device)
    for _ in range(10):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * 1024 * 300 * 300 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="JSON to write")
    parser.add_argument("--cuda-graph", action="store_true", help="profile the replayed configuration (GPU only)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.cuda_graph and not cuda:
        parser.error("--cuda-graph: CUDA is not available on this machine")
    # speed.py's fast configurations: one batch of all episodes on a GPU (eager, or replayed as a CUDA graph),
    # one episode per pass on a CPU thread
    name = GPU_CONFIGS[-1]["name"] if args.cuda_graph else FAST_GPU
    config = next(c for c in GPU_CONFIGS if c["name"] == name) if cuda else \
        next(c for c in CPU_CONFIGS if c["name"] == "fast, 1 thread")
    data, model, sync = warmed_up_model(config, warmup_steps=2)
    sync()
    start = time.perf_counter()
    model.fit(data, steps=3, seed=5, progress=False)
    sync()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu, 1 thread", "configuration": config["name"],
              "seconds_per_step_unprofiled": (time.perf_counter() - start) / 3, "steps_profiled": 2}
    if not args.cuda_graph:     # a replay dispatches no operators to count
        with FlopCounterMode(display=False) as counter:
            model.fit(data, steps=1, seed=7, progress=False)
        result["gflop_per_step"] = counter.get_total_flops() / 1e9
        result["gflops_of_the_step"] = result["gflop_per_step"] / result["seconds_per_step_unprofiled"]
    result["gflops_of_a_dense_layer_product"] = matmul_gflops(model.device, sync)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        model.fit(data, steps=2, seed=9, progress=False)
        sync()
    # fit ends in a checkpoint save (every tensor copied to the host, each copy a stream sync): profiled
    # alone, it is subtracted from the two steps' counts
    with profile(activities=activities) as saving:
        model.save_checkpoint()
        sync()
    events = prof.key_averages()
    result["cpu_operator_seconds_per_step"] = sum(e.self_cpu_time_total for e in events) / 1e6 / 2
    if cuda:
        save_counts = {e.key: e.count for e in saving.key_averages() if e.key in SYNCS}
        result["kernel_launches_per_step"] = sum(e.count for e in events if e.key in LAUNCHES) / 2
        result["copies_and_syncs_of_the_final_save"] = save_counts
        result["copies_and_syncs_per_step"] = {e.key: (e.count - save_counts.get(e.key, 0)) / 2
                                               for e in events if e.key in SYNCS}
        # kernels only (an operator's own CUDA time is the time of the kernels it launched)
        result["gpu_kernel_seconds_per_step"] = sum(
            e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6 / 2
        result["top_cuda"] = events.table(sort_by="self_device_time_total", row_limit=12)
    result["top_cpu"] = events.table(sort_by="self_cpu_time_total", row_limit=15)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print({k: v for k, v in result.items() if not k.startswith("top")})


if __name__ == "__main__":
    main()
