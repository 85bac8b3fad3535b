"""Few-shot report: Pin-Tuning's Table 1 under three protocols, with baselines on identical supports.

Cells are (dataset, shots, method, seed); each is computed once and kept as one JSON under
``--cell-dir`` (resumable: a rerun skips finished cells; Pin-Tuning's meta-training is also
checkpointed per evaluation chunk), several cells run side by side with ``--processes``. The
report ``benchmarks/results/fewshot_table.{json,md,png}`` is generated from the cells
(``fewshot_report.py``).

Protocols (every Pin-Tuning cell):

1. *published, emulated*: the best of ``--evaluations`` evaluations during meta-training, each on
   freshly drawn supports, as the official code reports (``best_of_evals``);
2. *honest*: the final model on ``--draws`` fixed support draws (evaluation seeds that depend only
   on the seed and the draw, so every method of a seed sees the same supports);
3. *deployment*: query auxiliary labels hidden, each molecule scored on its own context graph
   (``evaluate_fewshot(protocol="deployment")``), same supports as 2.

Baselines get the honest protocol: frozen encoder + logistic regression, fine-tuning, ProtoNet,
MAML, ECFP4 + random forest, and ECFP4 + auxiliary labels + random forest (the information
Pin-Tuning's context graph adds under the paper protocol). ToxCast is the nine GS-Meta
assay-provider groups, averaged as the paper does. PCBA is not shipped: pass ``--data-dir`` with
your ``pcba.csv.gz`` and ``--datasets pcba``.

The paper used the GIN ``supervised_contextpred`` weights (not shipped); the shipped encoder is
the GCN. With your GIN file: ``--encoder gin_supervised_contextpred --encoder-path FILE``.

    python benchmarks/fewshot_table.py --datasets tox21 sider --shots 10 5 --seeds 0 1 2 --steps 2000
    python benchmarks/fewshot_table.py --report-only
    python benchmarks/fewshot_table.py --datasets tox21 --shots 10 --seeds 0 --draws 5 \
        --rescore runs/benchmarks/pintuning-paper-gcn_supervised_contextpred-2000steps-seed0
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot_report import METHODS, TOXCAST, aggregate, plot, report  # noqa: E402
from pintuning_tox21 import RESULTS, run_pintuning  # noqa: E402

DATASETS = ["tox21", "sider", "muv", "toxcast", "pcba"]


def eval_seeds(seed: int, draws: int) -> list:
    """Evaluation seeds of the honest and deployment protocols: a function of (seed, draw) only."""
    return [10_000 * (seed + 1) + draw for draw in range(draws)]


def support_digest(data, shots: int, eval_seed: int) -> str:
    """A short digest of the support sets of ``eval_seed`` (to check methods saw the same ones)."""
    from deepchem_pintuning.episodes import evaluation_episodes
    text = ";".join(f"{e.task}:{sorted(e.support.tolist())}" for e in evaluation_episodes(data, shots, eval_seed))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pintuning_cell(data, dataset: str, shots: int, seed: int, args, device, seeds: list, tag: str = "",
                   deployment: bool = True, **overrides) -> dict:
    """Meta-train Pin-Tuning (resumable) and score it under the published, honest and deployment protocols."""
    from deepchem_pintuning.fewshot_evaluation import best_of_evaluations
    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.pintuning import published_hyperparameters

    settings = {**published_hyperparameters(dataset, shots), **({"encoder_path": args.encoder_path}
                                                               if args.encoder_path else {}), **overrides}
    folder = Path(args.checkpoint_dir) / f"{dataset}-{shots}shot-{args.encoder}{tag}-{args.steps}steps-seed{seed}"
    eval_every = max(1, args.steps // args.evaluations)
    run = run_pintuning(data, seed, args.steps, eval_every, "paper", args.encoder, workers=args.workers,
                        checkpoint_dir=folder, resample_eval_support=True, device=device,
                        cuda_graph=args.cuda_graph, **settings)
    model = PinTuningModel.load(str(folder), device=device)
    model.workers = args.workers
    return {"published": best_of_evaluations(run["evaluations"])["eval_roc_auc"],
            "evaluations": _curve(run["evaluations"]), "steps": args.steps, "encoder": args.encoder,
            "settings": overrides, "seconds_per_outer_step": run["seconds_per_outer_step"],
            "training_seconds": run["wall_seconds"],
            **({"cuda_graph_replayed_steps": run["replayed_steps"]} if args.cuda_graph else {}),
            **model_scores(model, data, seeds, deployment)}


def model_scores(model, data, seeds: list, deployment: bool = True) -> dict:
    """A trained model's honest (and deployment) scores on the support draws ``seeds``."""
    cell = honest_scores([model.evaluate_fewshot(data, seed=e) for e in seeds])
    if deployment:
        cell["deployment"] = [model.evaluate_fewshot(data, seed=e, protocol="deployment")["roc_auc"] for e in seeds]
    return cell


def _curve(evaluations: list) -> list:
    return [{"step": e["step"], "eval_seed": e.get("eval_seed"), "roc_auc": e["eval_roc_auc"]} for e in evaluations]


def rescored_cell(folder: Path, dataset: str, shots: int, seed: int, args) -> dict:
    """A cell from a model meta-trained elsewhere (e.g. ``pintuning_tox21.py --steps 2000``), scored on this
    report's support draws without training again. Its evaluations during meta-training count as the
    published protocol only if they drew fresh supports; otherwise their best is kept apart, as
    ``best_of_fixed_evaluations``."""
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.fewshot_evaluation import best_of_evaluations
    from deepchem_pintuning.model import PinTuningModel

    device, device_name = cell_device(args)
    model = PinTuningModel.load(str(folder), device=device)
    model.workers = args.workers
    if model.config.n_shot != shots:
        raise SystemExit(f"--rescore: {folder} holds a {model.config.n_shot}-shot model, not {shots}-shot")
    saved = json.loads((folder / "history.json").read_text())
    evaluations = [h for h in saved["history"] if "eval_roc_auc" in h]
    data = load_fewshot(dataset, data_dir=args.data_dir if dataset == "pcba" else None)
    seeds = eval_seeds(seed, args.draws)
    start = time.perf_counter()
    cell = {"dataset": dataset, "shots": shots, "method": "pintuning", "seed": seed, "eval_seeds": seeds,
            "supports": [support_digest(data, shots, e) for e in seeds], "device": device_name,
            "steps": model._global_step, "encoder": model.config.encoder, "rescored_from": str(folder),
            "evaluations": _curve(evaluations), "training_seconds": saved["wall_seconds"],
            **model_scores(model, data, seeds)}
    fresh = len({e.get("eval_seed") for e in evaluations}) == len(evaluations) > 1
    cell["published" if fresh else "best_of_fixed_evaluations"] = best_of_evaluations(evaluations)["eval_roc_auc"]
    cell["wall_seconds"] = time.perf_counter() - start
    return cell


def honest_scores(results: list) -> dict:
    """``honest`` (mean ROC-AUC per support draw) and ``honest_per_task`` (per property, per draw) of evaluations."""
    return {"honest": [r["roc_auc"] for r in results],
            "honest_per_task": {task: [r["per_task"][task]["roc_auc"] for r in results] for task in results[0]["per_task"]}}


def cell_device(args):
    """The device of a cell (a GPU when there is one, unless ``--cpu``) and its description."""
    import torch
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.machine()}, {args.threads} thread(s))"
    return device, name


def run_cell(dataset: str, shots: int, method: str, seed: int, args) -> dict:
    """One cell: every protocol's numbers for one method, dataset, shot count and seed."""
    from deepchem_pintuning.baselines import evaluate_baseline_draws
    from deepchem_pintuning.data import load_fewshot

    device, device_name = cell_device(args)
    data = load_fewshot(dataset, data_dir=args.data_dir if dataset == "pcba" else None)
    seeds = eval_seeds(seed, args.draws)
    start = time.perf_counter()
    cell = {"dataset": dataset, "shots": shots, "method": method, "seed": seed, "eval_seeds": seeds,
            "supports": [support_digest(data, shots, e) for e in seeds], "device": device_name}
    if method == "pintuning":
        cell.update(pintuning_cell(data, dataset, shots, seed, args, device, seeds))
    else:
        cell.update(honest_scores(evaluate_baseline_draws(method, data, shots, seed, seeds, encoder=args.encoder)))
        cell["encoder"] = None if method.startswith("ecfp") else args.encoder
    cell["wall_seconds"] = time.perf_counter() - start
    return cell


def expand(datasets) -> list:
    return [d for name in datasets for d in (TOXCAST if name == "toxcast" else [name])]


def add_cell_options(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of the cell-based benchmarks (this one and ``ablations.py``); results under ``name``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="Pin-Tuning outer steps (paper: 2000)")
    parser.add_argument("--evaluations", type=int, default=20, help="evaluations during meta-training (paper: 20)")
    parser.add_argument("--draws", type=int, default=10, help="fixed support draws per seed (honest protocol)")
    parser.add_argument("--encoder", default="gcn_supervised_contextpred")
    parser.add_argument("--encoder-path", default=None)
    parser.add_argument("--processes", type=int, default=1, help="cells computed side by side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is available")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="GPU: replay each outer step as a CUDA graph (padded batches; dropout drawn differently "
                             "from the eager path, equally distributed); the cell counts the replayed steps")
    parser.add_argument("--cell-dir", default=str(RESULTS / name))
    parser.add_argument("--checkpoint-dir", default="runs/benchmarks/meta_trained",
                        help="Pin-Tuning runs, one folder per (dataset, shots, encoder, settings, steps, seed), shared "
                             "by this report and the ablations (the full model is the report's Pin-Tuning run)")
    parser.add_argument("--out", default=str(RESULTS / f"{name}.json"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)


def cell_file(dataset: str, shots: int, name: str, seed: int, steps: Optional[int] = None) -> str:
    """A cell's file name; a meta-trained cell's names its outer steps (cells of several budgets sit side by side)."""
    return f"{dataset}-{shots}shot-{name}{'' if steps is None else f'-{steps}steps'}-seed{seed}.json"


def run_cells(script: str, args, cells: list, compute_cell, write_report, draw, summary=None,
              meta_trained: Iterable[str] = ("pintuning",)) -> None:
    """``--cell``: compute that cell into its JSON. Otherwise compute every missing cell of ``cells``
    in ``--processes`` subprocesses, then write ``--out`` (JSON), its ``.md`` and ``.png`` from all cells.
    Cells of a method in ``meta_trained`` are kept per ``--steps``."""
    cell_dir = Path(args.cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    meta_trained = set(meta_trained)

    def path_of(dataset, shots, name, seed) -> Path:
        return cell_dir / cell_file(dataset, shots, name, seed, args.steps if name in meta_trained else None)

    if args.cell:
        dataset, shots, name, seed = args.cell[0], int(args.cell[1]), args.cell[2], int(args.cell[3])
        path_of(dataset, shots, name, seed).write_text(json.dumps(compute_cell(dataset, shots, name, seed, args),
                                                                  indent=1))
        return
    if not args.report_only:
        forwarded = [a for a in sys.argv[1:] if a != "--report-only"]

        def compute(cell) -> None:
            command = [sys.executable, script, *forwarded, "--cell", *map(str, cell)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            status = "done" if done.returncode == 0 else f"FAILED: {done.stderr.strip().splitlines()[-1:]}"
            print(f"{'-'.join(map(str, cell))}: {status}", flush=True)

        with ThreadPoolExecutor(max(1, args.processes)) as pool:
            list(pool.map(compute, [c for c in cells if not path_of(*c).exists()]))
    done = [json.loads(p.read_text()) for p in sorted(cell_dir.glob("*.json"))]
    out = Path(args.out)
    out.write_text(json.dumps({"cells": done, **(summary(done) if summary else {})}, indent=1))
    out.with_suffix(".md").write_text(write_report(done))
    if done:
        draw(done, out.with_suffix(".png"))
    print(write_report(done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["tox21", "sider", "muv", "toxcast"], choices=DATASETS + TOXCAST)
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 5])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--data-dir", default=None, help="folder with pcba.csv.gz (PCBA is not shipped)")
    parser.add_argument("--rescore", type=Path, metavar="FOLDER",
                        help="add the cell of a model meta-trained elsewhere (its checkpoint folder), scored on this "
                             "report's supports, for the one dataset, shot count and seed given; then the report")
    add_cell_options(parser, "fewshot_table")
    args = parser.parse_args()
    if args.rescore:
        if len(args.datasets) != 1 or len(args.shots) != 1 or len(args.seeds) != 1 or args.datasets[0] == "toxcast":
            parser.error("--rescore takes one dataset (a ToxCast group by name), one --shots and one --seeds")
        if not (args.rescore / "history.json").is_file():
            parser.error(f"--rescore: {args.rescore} is not a meta-training checkpoint folder (no history.json)")
        cell = rescored_cell(args.rescore, args.datasets[0], args.shots[0], args.seeds[0], args)
        Path(args.cell_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.cell_dir) / cell_file(cell["dataset"], cell["shots"], "pintuning", cell["seed"], cell["steps"])
         ).write_text(json.dumps(cell, indent=1))
        args.report_only = True
    cells = [(d, s, m, seed) for d in expand(args.datasets) for s in args.shots for m in args.methods
             for seed in args.seeds]
    run_cells(__file__, args, cells, run_cell, report, plot, lambda done: {"table": aggregate(done)})


if __name__ == "__main__":
    main()
