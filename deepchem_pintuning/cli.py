"""Command line interface: ``pintuning <command> ...``.

* ``pintuning summary --dataset tox21 --shots 10``: the few-shot view of a dataset (properties with
  their split and label counts, molecules skipped at featurization, sampled episodes).
* ``pintuning train --dataset tox21 --steps 20 --model-dir runs/tox21``: meta-train Pin-Tuning and
  print the ROC-AUC on the meta-test properties.
* ``pintuning plot --model-dir runs/tox21 --out-dir plots``: learning curve, per-property ROC /
  precision-recall curves and the query molecules' embeddings before and after adaptation of a
  saved model.
* ``pintuning predict --model-dir runs/tox21 --support assay.csv --library library.csv --out scores.csv``:
  score a library (CSV or SDF) for a new assay from its labelled support set, streamed, each
  molecule on its own context graph (:mod:`deepchem_pintuning.inductive`).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from deepchem_pintuning.data import DATASETS, load_fewshot
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episodes
from deepchem_pintuning.library_io import (UserInputError, check_readable_file, check_writable_output, count_records,
                                           find_column, read_library)


def _load_dataset(args: argparse.Namespace):
    """``load_fewshot`` for a command; a raw file that cannot be read is a one-line user error."""
    import pandas as pd
    try:
        return load_fewshot(args.dataset, data_dir=args.data_dir)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, KeyError,
            OSError) as error:   # OSError: e.g. gzip.BadGzipFile, a directory, no permission
        if isinstance(error, FileNotFoundError):
            raise
        detail = str(error).splitlines()[0] if str(error) else ""
        raise UserInputError(f"--data-dir {args.data_dir or 'the shipped data'}: the {args.dataset} file cannot be "
                             f"read ({type(error).__name__}: {detail})") from None


def _summary(args: argparse.Namespace) -> None:
    _require_at_least_one(args, "shots", "episodes")
    data = _load_dataset(args)
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


def _require_at_least_one(args: argparse.Namespace, *names: str) -> None:
    """A one-line user error for the first of the named options that is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def _train(args: argparse.Namespace) -> None:
    import torch

    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.pintuning import published_hyperparameters

    _require_at_least_one(args, "steps", "shots", "workers")
    if args.model_dir is not None and Path(args.model_dir).exists() and not Path(args.model_dir).is_dir():
        raise UserInputError(f"--model-dir {args.model_dir} is a file, not a folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    data = _load_dataset(args)
    settings = published_hyperparameters(args.dataset, args.shots)
    settings.update({k: v for k, v in (("inner_lr", args.inner_lr), ("meta_lr", args.meta_lr),
                                       ("emb_bwc_weight", args.emb_bwc_weight)) if v is not None})
    model = PinTuningModel.for_dataset(data, protocol=args.protocol, encoder=args.encoder,
                                       encoder_path=args.encoder_path, model_dir=args.model_dir,
                                       seed=args.seed, device=device, **settings)
    model.workers = args.workers
    summary = model.parameter_summary()
    print(f"Pin-Tuning on {data.name} ({args.shots}-shot, protocol {args.protocol}, encoder {args.encoder}): "
          f"{summary['trainable']:,} tuned / {summary['frozen']:,} frozen parameters")
    model.fit(data, steps=args.steps, seed=args.seed)
    losses = [h["loss"] for h in model.history if "loss" in h]
    if losses:
        print(f"meta-training loss: first step {losses[0]:.4f}, last step {losses[-1]:.4f}")
    scores = model.evaluate_fewshot(data, seed=args.seed, progress=True)
    for task, task_scores in scores["per_task"].items():
        print(f"  {task:<32} ROC-AUC {task_scores['roc_auc']:.4f}  PR-AUC {task_scores['pr_auc']:.4f}")
    print(f"mean over {len(scores['per_task'])} meta-test properties: ROC-AUC {scores['roc_auc']:.4f}  "
          f"PR-AUC {scores['pr_auc']:.4f}")
    print(f"model saved in {model.model_dir}")


def _read_support(path: str, smiles_column, label_column):
    """SMILES and 0/1 labels of a support CSV; a one-line error names the file, row and value."""
    import pandas as pd

    file = check_readable_file(path, "--support")
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserInputError(f"--support {path} is not a readable CSV file: {str(error).splitlines()[0]}") from None
    smiles = find_column(list(frame.columns), smiles_column, "smiles", file, "--smiles-column")
    label = find_column(list(frame.columns), label_column, "label", file, "--label-column")
    if frame.empty:
        raise UserInputError(f"--support {path} has no rows")
    labels = []
    for row, value in enumerate(frame[label].str.strip(), start=2):
        if value not in ("0", "1", "0.0", "1.0"):
            raise UserInputError(f"--support {path} row {row}: label {value!r} is not 0 or 1")
        labels.append(float(value))
    return frame[smiles].str.strip().tolist(), labels


def _predict(args: argparse.Namespace) -> None:
    import torch
    from tqdm.auto import tqdm

    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.user_assay import featurize_ahead

    _require_at_least_one(args, "batch_size", "chunk_size", "workers")
    if args.uncertainty == 1 or args.uncertainty < 0:
        raise UserInputError("--uncertainty needs at least 2 adaptations (or 0 for none)")
    out = check_writable_output(args.out)
    library = check_readable_file(args.library, "--library")
    support_smiles, support_labels = _read_support(args.support, args.smiles_column, args.label_column)
    total = count_records(library)
    if total == 0:
        raise UserInputError(f"--library {args.library} has no molecules")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = PinTuningModel.load(args.model_dir, device=device)
    model.workers = args.workers
    if args.adaptation is not None:
        model.config.deployment_adaptation = args.adaptation
    try:
        adapted = model.adapt_to_assay(support_smiles, support_labels, seed=args.seed)
        resampled = [model.adapt_to_assay(support_smiles, support_labels, seed=args.seed + 1 + k)
                     for k in range(args.uncertainty)]
    except ValueError as error:
        raise UserInputError(f"--support {args.support}: {error}") from None
    scored, n_rows = 0, 0
    chunks = read_library(library, args.smiles_column, args.id_column, chunk_size=args.chunk_size)
    # written under a temporary name and renamed when complete: a failed run leaves no partial --out
    partial = out.with_name(out.name + ".partial")
    with _removed_on_error(partial), open(partial, "w", newline="") as handle, \
            tqdm(total=total, unit="mol", desc="scoring", disable=args.quiet) as bar:
        for number, (rows, featurized) in enumerate(featurize_ahead(chunks, model.config.kekulize)):
            scores, reasons = model.score_smiles(adapted, featurized, args.batch_size)
            rows = rows.assign(score=scores)
            if resampled:  # spread over adaptations with other dropout seeds
                spread = np.std([model.score_smiles(a, featurized, args.batch_size)[0] for a in resampled], axis=0)
                rows = rows.assign(score_sd=spread)
            rows = rows.assign(reason=reasons)
            rows.to_csv(handle, header=number == 0, index=False, float_format="%.6f")
            handle.flush()
            scored, n_rows = scored + int(np.isfinite(scores).sum()), n_rows + len(rows)
            bar.update(len(rows))
    os.replace(partial, out)
    print(f"scored {scored} of {n_rows} molecules ({n_rows - scored} could not be featurized: empty score, "
          f"reason column) -> {out}")


@contextlib.contextmanager
def _removed_on_error(path: Path) -> Iterator[None]:
    """Delete ``path`` if the block fails."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _device(name: str):
    """``torch.device(name)``, refusing names torch does not know and CUDA without a GPU."""
    from deepchem_pintuning.model import as_device
    try:
        return as_device(name)
    except ValueError as error:
        raise UserInputError(f"--device {error}") from None


def _plot(args: argparse.Namespace) -> None:
    try:
        import matplotlib
    except ImportError:
        raise UserInputError("plotting needs matplotlib: pip install 'deepchem-pintuning[plot]'") from None
    matplotlib.use("Agg")
    import torch

    from deepchem_pintuning.deepchem_contract import HISTORY_FILE
    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.plotting import adaptation_embeddings, embedding_view, learning_curve, roc_pr_curves

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out-dir {args.out_dir} is a file, not a folder")
    model = PinTuningModel.load(args.model_dir, device=_device(args.device))
    dataset = args.dataset or model.card.get("dataset")
    if dataset not in DATASETS:
        raise UserInputError(f"{args.model_dir} does not say which dataset it was trained on: pass --dataset")
    if args.threads:
        torch.set_num_threads(args.threads)
    model.workers = args.workers
    args.dataset = dataset
    data = _load_dataset(args)
    embedded = args.embedding_property or data.test_tasks[0]
    if embedded not in data.tasks:
        raise UserInputError(f"--embedding-property {embedded!r} is not a property of {dataset} "
                             f"(meta-test properties: {', '.join(data.test_tasks)})")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    history = Path(args.model_dir, HISTORY_FILE)
    if history.exists():
        learning_curve(history, title=f"{dataset}, {model.config.n_shot}-shot").savefig(out / "learning_curve.png")
        written.append("learning_curve.png")
    result = model.evaluate_fewshot(data, seed=args.seed, return_scores=True, progress=True)
    roc_pr_curves(result, title=f"{dataset} meta-test properties").savefig(out / "roc_pr.png")
    written.append("roc_pr.png")
    embeddings = adaptation_embeddings(model, data, embedded, seed=args.seed)
    embedding_view(embeddings, method=args.embedding_method, seed=args.seed,
                   title=f"{dataset}, {model.config.n_shot}-shot, query molecules of {embedded}").savefig(
        out / "embeddings.png")
    written.append("embeddings.png")
    print(f"mean ROC-AUC {result['roc_auc']:.4f}; wrote {', '.join(written)} to {out}")


def _pretrain(args: argparse.Namespace) -> None:
    import torch
    from deepchem_pintuning.pretrain import PretrainConfig, pretrain
    _require_at_least_one(args, "epochs", "batch_size", "log_every", "checkpoint_every")
    if args.molecules is not None:
        _require_at_least_one(args, "molecules")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {args.out} is a file, not a folder")
    if not args.resume and not args.overwrite and (out / "encoder.pth").exists():
        raise UserInputError(f"--out {args.out} already holds a pre-trained encoder (encoder.pth); pass --resume "
                             "to continue that run or --overwrite to replace it")
    if args.molecule_file is not None:
        check_readable_file(args.molecule_file, "--molecule-file")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(objective=args.objective, molecules=args.molecules, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed, mask_edge=args.mask_edge,
                            log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                            molecule_file=args.molecule_file)
    run = pretrain(config, args.out, resume=args.resume)
    print(f"{run.step} steps in {run.settings['wall_seconds']:.0f} s "
          f"({run.settings['molecules_per_s']:.1f} molecules/s); encoder checkpoint: {args.out}/encoder.pth")


def _add_cpu_options(command: argparse.ArgumentParser, work: str) -> None:
    command.add_argument("--threads", type=int, default=1,
                         help="torch threads per worker (0: torch default). On a CPU, one thread per worker and one "
                              "worker per core is fastest (docs/pintuning.md, 'Speed'); results are bit-reproducible "
                              "for a given thread count, other counts round differently (~1e-6)")
    command.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                         help=f"CPU worker threads computing {work} side by side (default: min(2, cores)); "
                              "results do not depend on it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pintuning", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="few-shot summary of a dataset")
    summary.add_argument("--dataset", default="tox21", choices=DATASETS)
    summary.add_argument("--data-dir", default=None, help="folder with the raw file (default: shipped data)")
    summary.add_argument("--shots", type=int, default=10)
    summary.add_argument("--episodes", type=int, default=5, help="training episodes to draw")
    summary.add_argument("--seed", type=int, default=0)
    summary.set_defaults(run=_summary)

    pre = commands.add_parser("pretrain", help="self-supervised GIN pre-training on the shipped MOSES SMILES")
    pre.add_argument("--objective", default="attrmask", choices=["attrmask", "contextpred", "both"])
    pre.add_argument("--molecules", type=int, default=None, help="use the first N rows (default: all)")
    pre.add_argument("--epochs", type=int, default=1)
    pre.add_argument("--out", required=True, help="output folder (encoder.pth, resume.pt, log, settings)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    pre.add_argument("--overwrite", action="store_true", help="replace a pre-trained encoder already in OUT")
    pre.add_argument("--batch-size", type=int, default=256)
    pre.add_argument("--lr", type=float, default=1e-3)
    pre.add_argument("--mask-edge", action="store_true", help="attrmask: also mask and predict bond types")
    pre.add_argument("--log-every", type=int, default=10, help="steps per training-log row")
    pre.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    pre.add_argument("--molecule-file", default=None, help="CSV with a SMILES column (default: shipped MOSES)")
    pre.add_argument("--threads", type=int, default=1, help="CPU threads; 0 = PyTorch default")
    pre.set_defaults(run=_pretrain)

    train = commands.add_parser("train", help="meta-train Pin-Tuning and evaluate on the meta-test properties")
    train.add_argument("--dataset", default="tox21", choices=DATASETS)
    train.add_argument("--data-dir", default=None)
    train.add_argument("--protocol", default="paper", choices=["paper", "official"])
    train.add_argument("--encoder", default="gcn_supervised_contextpred")
    train.add_argument("--encoder-path", default=None, help="checkpoint file for encoders that are not shipped")
    train.add_argument("--shots", type=int, default=10)
    train.add_argument("--steps", type=int, default=2000, help="outer steps (paper: 2000)")
    train.add_argument("--inner-lr", type=float, default=None, help="default: the published setting")
    train.add_argument("--meta-lr", type=float, default=None, help="default: the published setting")
    train.add_argument("--emb-bwc-weight", type=float, default=None, help="default: the published setting")
    train.add_argument("--model-dir", default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    _add_cpu_options(train, "whole episodes of an outer step and evaluation chunks")
    train.set_defaults(run=_train)

    plot = commands.add_parser("plot", help="learning curve, per-property ROC / precision-recall curves and a 2-D "
                                             "view of molecule embeddings before and after adaptation of a saved "
                                             "model")
    plot.add_argument("--model-dir", required=True)
    plot.add_argument("--out-dir", required=True, help="folder for learning_curve.png, roc_pr.png and embeddings.png")
    plot.add_argument("--dataset", default=None, choices=DATASETS, help="default: the dataset the model was trained on")
    plot.add_argument("--data-dir", default=None)
    plot.add_argument("--seed", type=int, default=0, help="evaluation seed (fixed supports)")
    plot.add_argument("--embedding-property", default=None,
                      help="property whose query molecules embeddings.png shows (default: the first meta-test one)")
    plot.add_argument("--embedding-method", choices=["pca", "tsne"], default="pca", help="2-D projection")
    plot.add_argument("--device", default="cpu")
    _add_cpu_options(plot, "evaluation chunks")
    plot.set_defaults(run=_plot)

    predict = commands.add_parser(
        "predict", help="score a library for a new assay given its support set (each molecule scored on its own, "
                        "streamed: every input row is written, in order, with a score or a reason)")
    predict.add_argument("--model-dir", required=True)
    predict.add_argument("--support", required=True, help="CSV with a SMILES column and a 0/1 label column")
    predict.add_argument("--library", required=True, help="CSV with a SMILES column, or an SDF file (every record)")
    predict.add_argument("--out", required=True, help="output CSV: the input rows + score + reason")
    predict.add_argument("--smiles-column", default=None, help="SMILES column of both CSVs (default: 'smiles')")
    predict.add_argument("--label-column", default=None, help="label column of --support (default: 'label')")
    predict.add_argument("--id-column", default=None,
                         help="CSV: a column that must exist; SDF: a record property copied to the output")
    predict.add_argument("--seed", type=int, default=0, help="seeds the adaptation step's dropout")
    predict.add_argument("--adaptation", choices=["train", "eval"], default=None,
                         help="adaptation step in train mode (seeded dropout, support-batch statistics) or eval "
                              "mode (deterministic whatever the seed); default: the model's setting")
    predict.add_argument("--batch-size", type=int, default=64, help="molecules scored per batch")
    predict.add_argument("--chunk-size", type=int, default=4096,
                         help="rows read, featurized and written at a time (the next chunk is featurized while "
                              "this one is scored)")
    predict.add_argument("--uncertainty", type=int, default=0, metavar="K",
                         help="add a score_sd column: the spread of the scores over K further adaptations "
                              "(dropout seeds seed+1..seed+K); costs K more scoring passes")
    predict.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    _add_cpu_options(predict, "batches of molecules")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command; a user error prints one line (``pintuning: error: ...``) and returns 2, Ctrl-C 130."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (UserInputError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"pintuning: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("pintuning: interrupted (an unfinished --out is not written)"
              if args.command == "predict" else "pintuning: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
