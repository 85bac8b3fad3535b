"""Speed of Pin-Tuning meta-training and evaluation: reference path vs fast path, side by side.

Tox21 10-shot, paper preset, shipped GCN encoder (the published settings). Every configuration
runs in its own fresh process (so its peak memory is its own), and the configurations are run in
interleaved rounds, so a slow patch of a shared machine hits all of them alike: compare the
ratios. Absolute times are only meaningful on a dedicated GPU.

Configurations: the per-episode reference and the fast path with 1 and 2 CPU threads (on CPU the
fast path runs one episode per pass, passes spread over worker threads; one batch of all ten
episodes is measured too), and on a GPU, when there is one, the reference, the one-batch fast
path and the same replayed as a CUDA graph (``model.cuda_graph``). Writes ``benchmarks/results/speed.json`` and ``speed.md``::

    python benchmarks/speed.py --steps 4 --rounds 2 --note "nothing else running"
    python benchmarks/speed.py --table-only      # regenerate speed.md from the JSON
    python benchmarks/speed.py --only gpu --out OTHER.json    # a lent GPU's numbers (benchmarks/gpu_session.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CPU_CONFIGS = [
    {"name": "reference, 1 thread", "fast": False, "threads": 1, "workers": 1, "per_pass": 1, "evaluate": True},
    {"name": "reference, 2 threads", "fast": False, "threads": 2, "workers": 1, "per_pass": 1, "evaluate": False},
    {"name": "fast, 1 thread", "fast": True, "threads": 1, "workers": 1, "per_pass": 1, "evaluate": True},
    {"name": "fast, 2 worker threads", "fast": True, "threads": 1, "workers": 2, "per_pass": 1, "evaluate": True},
    {"name": "fast, one batch of 10 episodes, 2 threads", "fast": True, "threads": 2, "workers": 1, "per_pass": 0,
     "evaluate": False},
]
GPU_CONFIGS = [
    {"name": "reference, GPU", "fast": False, "threads": 1, "workers": 1, "per_pass": 1, "evaluate": True,
     "device": "cuda"},
    {"name": "fast, GPU, one batch of 10 episodes", "fast": True, "threads": 1, "workers": 1, "per_pass": 0,
     "evaluate": True, "device": "cuda"},
    {"name": "fast, GPU, one batch, replayed CUDA graph", "fast": True, "threads": 1, "workers": 1, "per_pass": 0,
     "evaluate": False, "device": "cuda", "cuda_graph": True},
]
FAST_GPU = GPU_CONFIGS[1]["name"]
BASELINE = {"cpu": "reference, 1 thread", "cuda": "reference, GPU"}


def warmed_up_model(config: dict, warmup_steps: int = 1):
    """The Tox21 10-shot paper-preset model of a configuration, after ``warmup_steps`` outer steps (caches,
    CUDA start-up): ``(data, model, sync)``, ``sync`` waiting for the GPU (a no-op on a CPU)."""
    import torch
    torch.set_num_threads(config["threads"])
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.pintuning import published_hyperparameters

    device = torch.device(config.get("device", "cpu"))
    data = load_fewshot("tox21")
    model = PinTuningModel.for_dataset(data, seed=0, device=device, **published_hyperparameters("tox21", 10))
    model.workers = config["workers"]
    model.episodes_per_pass = config["per_pass"] or None
    model.cuda_graph = config.get("cuda_graph", False)   # the warm-up fit captures; later fit calls replay
    model.fit(data, steps=warmup_steps, seed=0, progress=False, fast=config["fast"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return data, model, sync


def child(config: dict, steps: int) -> dict:
    """Measure one configuration in this process; returns seconds per step, per evaluation, peak memory."""
    import torch
    data, model, sync = warmed_up_model(config)
    device = model.device
    sync()
    start = time.perf_counter()
    model.fit(data, steps=steps, seed=1, progress=False, fast=config["fast"])   # as training runs: one call
    sync()
    # per-step wall times as fit records them (each step ends in a host sync: its losses are read);
    # the call's total adds what a call does once (sampler set-up, the final checkpoint)
    result = {"step_seconds": [h["seconds"] for h in model.history[-steps:]],
              "fit_seconds": time.perf_counter() - start}
    if config.get("cuda_graph"):
        result["replayed_steps"] = sum(bool(h.get("replayed")) for h in model.history[-steps:])
    if config["evaluate"]:
        start = time.perf_counter()
        result["eval_roc_auc"] = model.evaluate_fewshot(data, seed=0, fast=config["fast"])["roc_auc"]
        sync()
        result["eval_seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        result["gpu"] = torch.cuda.get_device_name()
    return result


def summarise(runs: list) -> list:
    rows = []
    for name in dict.fromkeys(r["config"]["name"] for r in runs):
        mine = [r for r in runs if r["config"]["name"] == name]
        steps = [s for r in mine for s in r["step_seconds"]]
        evals = [r["eval_seconds"] for r in mine if "eval_seconds" in r]
        rows.append({"name": name, "device": mine[0]["config"].get("device", "cpu"),
                     "median_step_s": statistics.median(steps), "min_step_s": min(steps), "max_step_s": max(steps),
                     "n_steps": len(steps), "median_eval_s": statistics.median(evals) if evals else None,
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                     "peak_gpu_mb": max((r.get("peak_gpu_mb", 0) for r in mine), default=None) or None,
                     "gpu": mine[0].get("gpu")})
        if "replayed_steps" in mine[0]:      # a step that did not fit its capacity, or a failed capture, ran eagerly
            rows[-1]["replayed"] = f"{sum(r['replayed_steps'] for r in mine)} of {len(steps)} steps replayed"
    for row in rows:
        base = next((b for b in rows if b["name"] == BASELINE[row["device"]]), None)
        row["step_speedup"] = base["median_step_s"] / row["median_step_s"] if base else None
        row["eval_speedup"] = (base["median_eval_s"] / row["median_eval_s"]
                               if base and base["median_eval_s"] and row["median_eval_s"] else None)
    return rows


def table(report: dict) -> str:
    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    # reports written before speed.py timed the steps inside one fit() call timed one call per step
    one_call = all("fit_seconds" in r for r in report["runs"])
    timing = ("timed inside one fit() call, each step as fit records it" if one_call
              else "timed as one fit() call per step, each call with its set-up and a checkpoint save")
    lines = ["# Pin-Tuning speed: reference vs fast path (generated by benchmarks/speed.py)", "",
             f"Tox21 10-shot, paper preset, shipped GCN (5 x 300), 10 episodes per outer step. "
             f"Machine: {' '.join(report['machine'].split())}; torch {report['torch']}. {report['rounds']} interleaved rounds x "
             f"{report['steps']} timed steps per configuration after one warm-up step, {timing}; each "
             f"configuration in a fresh process. Speed-up = reference median / this median, measured in the same run."
             + (f" Conditions: {report['note']}" if report.get("note") else ""), "",
             "| configuration | s / outer step (median, min-max) | speed-up | full evaluation (s) | speed-up | "
             "peak RSS (MB) | peak GPU (MB) |", "|---|---|---|---|---|---|---|"]
    for row in report["summary"]:
        lines.append(f"| {row['name']}{' (' + row['gpu'] + ')' if row.get('gpu') else ''}"
                     f"{'; ' + row['replayed'] if row.get('replayed') else ''} | "
                     f"{row['median_step_s']:.2f} ({row['min_step_s']:.2f}-{row['max_step_s']:.2f}) | "
                     f"{fmt(row['step_speedup'], '{:.2f}x')} | {fmt(row['median_eval_s'], '{:.1f}')} | "
                     f"{fmt(row['eval_speedup'], '{:.2f}x')} | {row['peak_rss_mb']:.0f} | "
                     f"{fmt(row['peak_gpu_mb'], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed outer steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    parser.add_argument("--table-only", action="store_true", help="regenerate the markdown table from --out")
    parser.add_argument("--note", help="the conditions of the run (e.g. what else ran), kept in the JSON and shown "
                                       "in the table; with --table-only it replaces the stored one")
    parser.add_argument("--only", choices=["cpu", "gpu"], help="measure only the CPU or only the GPU configurations "
                                                             "(default: CPU, and GPU when there is one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.steps)))
        return
    out = Path(args.out)
    if args.table_only:
        report = json.loads(out.read_text())
        if args.note:
            report["note"] = args.note
            out.write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(table(report))
        return

    import torch
    if args.only == "gpu" and not torch.cuda.is_available():
        parser.error("--only gpu: CUDA is not available on this machine")
    configs = ([] if args.only == "gpu" else CPU_CONFIGS) + \
        (GPU_CONFIGS if torch.cuda.is_available() and args.only != "cpu" else [])
    runs = []
    for round_ in range(args.rounds):
        for config in configs:
            config = {**config, "evaluate": config["evaluate"] and round_ == 0}
            print(f"round {round_}: {config['name']}", flush=True)
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config), "--steps", str(args.steps)],
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"config": config, "round": round_, **result})
            print(f"   {statistics.median(result['step_seconds']):.2f} s/step"
                  + (f", evaluation {result['eval_seconds']:.1f} s" if "eval_seconds" in result else ""), flush=True)
    report = {"machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores",
              "torch": torch.__version__, "steps": args.steps, "rounds": args.rounds, "note": args.note, "runs": runs,
              "summary": summarise(runs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    main()
