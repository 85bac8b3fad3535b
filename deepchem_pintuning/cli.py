"""Command line interface: ``pintuning <command> ...``.

``pintuning summary --dataset tox21 --shots 10`` prints the few-shot view of a dataset: properties
with their split and label counts, molecules skipped at featurization, and a few sampled episodes.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

import numpy as np

from deepchem_pintuning.data import DATASETS, load_fewshot
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episodes


def _summary(args: argparse.Namespace) -> None:
    data = load_fewshot(args.dataset, data_dir=args.data_dir)
    table = data.summary()
    print(f"{data.name}: {len(data)} molecules, {len(data.tasks)} properties "
          f"({len(data.train_tasks)} meta-train, {len(data.test_tasks)} meta-test)")
    print(f"skipped at featurization: {len(data.skipped)}"
          + (f" (e.g. {data.skipped[0][0]}: {data.skipped[0][1]})" if data.skipped else ""))
    print(table.to_string(index=False))
    sampler = EpisodeSampler(data, n_shot=args.shots, seed=args.seed)
    print(f"\n{args.episodes} meta-training episodes ({args.shots}-shot, seed {args.seed}):")
    for _ in range(args.episodes):
        ep = sampler.sample()
        print(f"  {ep.task:<32} support {len(ep.support)} ({int(ep.support_labels.sum())} active)  "
              f"query {len(ep.query)} ({int(ep.query_labels.sum())} active)  "
              f"auxiliary properties {len(ep.aux_task_indices)}")
    print(f"\nevaluation episodes (fixed supports for seed {args.seed}):")
    for ep in evaluation_episodes(data, args.shots, args.seed):
        print(f"  {ep.task:<32} support {len(ep.support)}  query {len(ep.query)} "
              f"({int(ep.query_labels.sum())} active, {np.mean(ep.query_labels):.1%})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pintuning", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="few-shot summary of a dataset")
    summary.add_argument("--dataset", default="tox21", choices=DATASETS)
    summary.add_argument("--data-dir", default=None, help="folder with the raw file (default: shipped data)")
    summary.add_argument("--shots", type=int, default=10)
    summary.add_argument("--episodes", type=int, default=5, help="training episodes to draw")
    summary.add_argument("--seed", type=int, default=0)
    summary.set_defaults(run=_summary)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
