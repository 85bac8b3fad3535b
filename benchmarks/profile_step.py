"""Where one fast-path outer step of Pin-Tuning spends its time: torch.profiler over two steps.

Tox21 10-shot, paper preset, shipped GCN, on the GPU when there is one (all episodes of a step in
one batch) and else on one CPU thread. Writes a JSON with the unprofiled seconds per step (three
steps inside one ``fit`` call, the final checkpoint included), and from the profiled steps: CPU
time of the operators, and on a GPU the kernel launches, host-device copies and stream
synchronisations per step, the GPU kernel time per step and the top operators::

    python benchmarks/profile_step.py benchmarks/results/profile_gpu.json    # benchmarks/gpu_session.sh
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaMemcpyAsync", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="JSON to write")
    args = parser.parse_args()
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.pintuning import published_hyperparameters

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_num_threads(1)
    data = load_fewshot("tox21")
    model = PinTuningModel.for_dataset(data, seed=0, device=device, **published_hyperparameters("tox21", 10))
    model.episodes_per_pass = None if cuda else 1
    model.fit(data, steps=2, seed=0, progress=False)                        # warm-up, caches
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    model.fit(data, steps=3, seed=5, progress=False)
    sync()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu, 1 thread",
              "seconds_per_step_unprofiled": (time.perf_counter() - start) / 3, "steps_profiled": 2}
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        model.fit(data, steps=2, seed=9, progress=False)
        sync()
    events = prof.key_averages()
    result["cpu_operator_seconds_per_step"] = sum(e.self_cpu_time_total for e in events) / 1e6 / 2
    if cuda:
        result["kernel_launches_per_step"] = sum(e.count for e in events if e.key in LAUNCHES) / 2
        result["copies_and_syncs_per_step"] = {e.key: e.count / 2 for e in events if e.key in SYNCS}
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
