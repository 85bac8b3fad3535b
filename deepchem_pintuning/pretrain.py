"""Self-supervised pre-training of the Hu et al. GIN on unlabelled SMILES (attribute masking, context prediction).

Offline re-creation of the node-level stage of Hu et al. (ICLR 2020, "Strategies for Pre-training
Graph Neural Networks", snap-stanford/pretrain-gnns ``chem/pretrain_masking.py`` and
``chem/pretrain_contextpred.py``) on the shipped MOSES molecules, with the featurization used at
fine-tuning time (:class:`~deepchem_pintuning.featurizer.PretrainGNNFeaturizer`, not kekulized,
like pretrain-gnns).

Objectives
----------
``attrmask``
    In every molecule ``int(n_atoms * mask_rate + 1)`` atoms get the mask token
    (atom type 119, chirality 0); a linear head on their last-layer vectors predicts the atom type
    (119 classes, as pretrain-gnns). With ``mask_edge`` the bonds touching a masked atom get the
    bond mask token (type 5) and a second head predicts each masked bond's type from the sum of its
    two atom vectors.
``contextpred``
    A random centre atom per molecule; the *substructure* is its ``K = num_layer``-hop
    neighbourhood, the *context* is the ring of atoms between ``r1 = K - 1`` and
    ``r2 = r1 + context_size`` hops (exclusive/inclusive, as pretrain-gnns), encoded by a separate
    ``context_size``-layer GIN. The context vector is the mean of the context-GNN vectors of the
    atoms shared by substructure and context. Positive pairs are (centre vector, its context);
    negatives pair each centre with the context of another molecule of the batch (cyclic shift).
    Binary cross-entropy on their dot products. Molecules without such a context (diameter too
    small for this centre) are left out of the batch, as in pretrain-gnns.
``both``
    The sum of the two losses on the same batch (pretrain-gnns ran them as separate jobs).

Outputs of :func:`pretrain` in ``out_dir``: ``encoder.pth`` (exactly the encoder's state dict, in
the pretrain-gnns key format, loadable with
:func:`~deepchem_pintuning.encoder.load_pretrained_weights`; its BatchNorm statistics recomputed on
unmasked training molecules, :func:`recalibrate_batch_norm`), ``resume.pt`` (step, optimizer,
heads, context GNN, random generator states), ``training_log.csv`` and ``settings.json``.
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from rdkit import Chem, rdBase
from torch import nn
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from deepchem_pintuning.batching import graph_to_data
from deepchem_pintuning.encoder import PretrainedGNN
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
from deepchem_pintuning.library_io import UserInputError
from deepchem_pintuning.molecule_graph import UnsupportedMoleculeError
from deepchem_pintuning.pretrain_objectives import AttributeMasking, ContextPrediction

logger = logging.getLogger(__name__)

OBJECTIVES = ("attrmask", "contextpred", "both")
LOG_FIELDS = ["step", "epoch", "molecules_seen", "loss", "attrmask_loss", "attrmask_acc",
              "contextpred_loss", "contextpred_acc", "molecules_per_s", "elapsed_s"]


def default_molecule_file() -> Path:
    """The shipped MOSES subset ``data/zinc/moses_subset_100k.csv.gz`` (column ``SMILES``)."""
    from deepchem_pintuning.data import project_data_dir
    return project_data_dir() / "zinc" / "moses_subset_100k.csv.gz"


def load_molecule_graphs(molecules: Optional[int] = None, path: Optional[Union[str, Path]] = None,
                         smiles_column: str = "SMILES") -> Tuple[List[Data], List[Tuple[int, str, str]]]:
    """Featurize the first ``molecules`` rows of a SMILES CSV into PyG graphs.

    Returns
    -------
    graphs: list of Data
        Integer graphs (``x``, ``edge_index``, ``edge_attr``) of the molecules that featurize.
    skipped: list of (int, str, str)
        Row, SMILES and reason for every molecule that was left out (unparsable SMILES, an atom or
        bond outside the embedding tables, or no atoms).

    Examples
    --------
    >>> graphs, skipped = load_molecule_graphs(molecules=3)
    >>> len(graphs), skipped, graphs[0].x.shape[1]
    (3, [], 2)
    """
    path = Path(path) if path is not None else default_molecule_file()
    if not path.exists():
        raise FileNotFoundError(f"molecule file {path} does not exist")
    try:
        frame = pd.read_csv(path, nrows=molecules)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as error:
        raise UserInputError(f"molecule file {path} is not a readable CSV file: {str(error).splitlines()[0]}") from None
    if smiles_column not in frame.columns:
        raise UserInputError(f"{path} has no column {smiles_column!r} (columns: {list(frame.columns)})")
    featurizer = PretrainGNNFeaturizer()
    graphs, skipped = [], []
    for row, smiles in enumerate(frame[smiles_column].astype(str)):
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() == 0:
            skipped.append((row, smiles, "RDKit could not parse the SMILES" if mol is None else "no atoms"))
            continue
        try:
            graphs.append(graph_to_data(featurizer._featurize(mol)))
        except UnsupportedMoleculeError as error:
            skipped.append((row, smiles, str(error)))
    if skipped:
        logger.warning("skipped %d of %d molecules (first: row %d %s: %s)", len(skipped), len(frame), *skipped[0])
    return graphs, skipped


def recalibrate_batch_norm(encoder: PretrainedGNN, graphs: Sequence[Data], batch_size: int = 256) -> PretrainedGNN:
    """A copy of ``encoder`` whose BatchNorm statistics are the average over whole, unmasked ``graphs``.

    During pre-training the running statistics follow the training inputs: masked molecules
    (attribute masking) and/or K-hop substructures (context prediction), mixed when both objectives
    run. Fine-tuning code that uses the encoder in eval mode (the frozen copy of Pin-Tuning) feeds
    whole unmasked molecules, so the written checkpoint carries statistics of those.

    Examples
    --------
    >>> graphs, _ = load_molecule_graphs(molecules=8)
    >>> encoder = PretrainedGNN("gin", num_layer=2, emb_dim=8)
    >>> calibrated = recalibrate_batch_norm(encoder, graphs)
    >>> bool(calibrated.batch_norms[0].running_var.ne(1).any()), bool(encoder.batch_norms[0].running_var.eq(1).all())
    (True, True)
    """
    calibrated = copy.deepcopy(encoder)
    device = next(calibrated.parameters()).device
    for norm in calibrated.batch_norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all calibration batches
    calibrated.train()
    calibrated.dropout = 0.0  # batch statistics without dropout noise, as eval mode sees them
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            calibrated.node_embeddings(Batch.from_data_list(list(graphs[start:start + batch_size])).to(device))
    for norm, original in zip(calibrated.batch_norms, encoder.batch_norms):
        norm.momentum = original.momentum
        norm.num_batches_tracked.copy_(original.num_batches_tracked)
    calibrated.dropout = encoder.dropout
    return calibrated.train(encoder.training)


# --------------------------------------------------------------------------- training loop
@dataclass
class PretrainConfig:
    """Settings of a pre-training run (pretrain-gnns defaults: batch 256, Adam lr 1e-3, dropout 0).

    Parameters
    ----------
    objective: str
        ``"attrmask"``, ``"contextpred"`` or ``"both"``.
    molecules: int, optional
        Use the first ``molecules`` rows of the molecule file (all rows when None).
    epochs: int
        Passes over those molecules.
    checkpoint_every, log_every: int
        Optimizer steps between checkpoints / training-log rows (a checkpoint is also written at the end).
    calibration_molecules: int
        BatchNorm statistics of the written encoder are recomputed on this many unmasked training
        molecules (see :func:`recalibrate_batch_norm`); 0 keeps the running statistics of training.
    """

    objective: str = "attrmask"
    molecules: Optional[int] = None
    epochs: int = 1
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    gnn_type: str = "gin"
    num_layer: int = 5
    emb_dim: int = 300
    dropout: float = 0.0
    mask_rate: float = 0.15
    mask_edge: bool = False
    context_size: int = 3
    neg_samples: int = 1
    log_every: int = 10
    checkpoint_every: int = 100
    molecule_file: Optional[str] = None
    calibration_molecules: int = 4096

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")


@dataclass
class PretrainRun:
    """What :func:`pretrain` produced."""

    encoder: PretrainedGNN
    heads: nn.ModuleDict
    step: int
    log: List[Dict[str, float]] = field(default_factory=list)
    settings: Dict = field(default_factory=dict)


def init_models(config: PretrainConfig) -> Tuple[PretrainedGNN, nn.ModuleDict]:
    """The encoder and the objective heads (and context GNN) as a run with ``config`` starts them.

    Examples
    --------
    >>> encoder, heads = init_models(PretrainConfig(objective="both", num_layer=2, emb_dim=8))
    >>> encoder.num_layer, sorted(heads)
    (2, ['attrmask', 'contextpred'])
    """
    torch.manual_seed(config.seed)
    encoder = PretrainedGNN(config.gnn_type, config.num_layer, config.emb_dim, config.dropout)
    heads = nn.ModuleDict()
    if config.objective in ("attrmask", "both"):
        heads["attrmask"] = AttributeMasking(config.emb_dim, config.mask_rate, config.mask_edge)
    if config.objective in ("contextpred", "both"):
        heads["contextpred"] = ContextPrediction(config.num_layer, config.emb_dim, config.gnn_type,
                                                 config.context_size, config.neg_samples, config.dropout)
    return encoder, heads


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Molecule order of one epoch, a function of (seed, epoch) only, so a resumed run sees the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _read_log(path: Path, up_to_step: int) -> List[Dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    return [row for row in rows if row["step"] <= up_to_step]


def _write_log(path: Path, rows: List[Dict[str, float]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def pretrain(config: PretrainConfig, out_dir: Union[str, Path], resume: bool = False, progress: bool = True,
             device: Optional[torch.device] = None, graphs: Optional[Sequence[Data]] = None) -> PretrainRun:
    """Pre-train a :class:`PretrainedGNN` and write its checkpoint, resume file and training log.

    Parameters
    ----------
    config: PretrainConfig
    out_dir: str or Path
        Output folder (created). With ``resume`` the run continues from ``out_dir/resume.pt``.
    device: torch.device, optional
        Default: CUDA when available, else CPU.
    graphs: sequence of Data, optional
        Pre-featurized molecules (default: :func:`load_molecule_graphs` of the configured file/rows).

    Examples
    --------
    >>> import tempfile
    >>> config = PretrainConfig(molecules=8, batch_size=4, num_layer=2, emb_dim=8, checkpoint_every=1)
    >>> run = pretrain(config, tempfile.mkdtemp(), progress=False)
    >>> run.step, sorted(run.settings["files"])
    (2, ['encoder', 'log', 'resume', 'settings'])
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    skipped: List[Tuple[int, str, str]] = []
    if graphs is None:
        graphs, skipped = load_molecule_graphs(config.molecules, config.molecule_file)
    graphs = [g for g in graphs if g.num_nodes > 0]
    if len(graphs) < 2:
        raise UserInputError(f"pre-training needs at least 2 featurizable molecules, got {len(graphs)}")
    out = Path(out_dir)   # created once the molecules are known to be usable
    out.mkdir(parents=True, exist_ok=True)

    encoder, heads = init_models(config)
    encoder, heads = encoder.to(device), heads.to(device)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(heads.parameters()), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = -(-len(graphs) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step, wall_before = 0, 0.0
    log_path = out / "training_log.csv"
    if resume:
        state_path = out / "resume.pt"
        if not state_path.exists():
            raise FileNotFoundError(f"cannot resume: {state_path} does not exist")
        state = torch.load(state_path, map_location=device, weights_only=True)
        saved = {k: v for k, v in state["config"].items() if k not in ("epochs", "log_every", "checkpoint_every")}
        now = {k: v for k, v in asdict(config).items() if k in saved}
        if saved != now:
            changed = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
            raise ValueError(f"resume settings differ from the saved run (saved, now): {changed}")
        encoder.load_state_dict(state["encoder"])
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, wall_before = int(state["step"]), float(state["wall_seconds"])
    log = _read_log(log_path, step)

    calibration = [graphs[i] for i in _epoch_order(len(graphs), config.seed, 0)[:config.calibration_molecules]]

    def checkpoint() -> None:
        written = recalibrate_batch_norm(encoder, calibration) if calibration else encoder
        torch.save(written.state_dict(), out / "encoder.pth")
        torch.save({"step": step, "config": asdict(config), "encoder": encoder.state_dict(),
                    "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "wall_seconds": wall_before + time.perf_counter() - start}, out / "resume.pt")
        _write_log(log_path, log)

    encoder.train()
    heads.train()
    start = time.perf_counter()
    window: Dict[str, List[float]] = {}
    window_start, window_molecules = time.perf_counter(), 0
    bar = tqdm(total=total_steps, initial=step, desc=f"pre-training ({config.objective})", disable=not progress)
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        order = _epoch_order(len(graphs), config.seed, epoch)
        chunk = order[position * config.batch_size:(position + 1) * config.batch_size].tolist()
        batch = [graphs[i] for i in chunk]
        losses = {name: head(encoder, batch, generator, device) for name, head in heads.items()}
        loss = sum(value for value, _ in losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        window_molecules += len(batch)
        window.setdefault("loss", []).append(loss.item())
        for name, (value, accuracy) in losses.items():
            window.setdefault(f"{name}_loss", []).append(value.item())
            window.setdefault(f"{name}_acc", []).append(accuracy)
        if step % config.log_every == 0 or step == total_steps:
            seconds = time.perf_counter() - window_start
            row = {"step": step, "epoch": step / steps_per_epoch,
                   "molecules_seen": epoch * len(graphs) + position * config.batch_size + len(batch),
                   **{k: float(np.mean(v)) for k, v in window.items()},
                   "molecules_per_s": window_molecules / max(seconds, 1e-9),
                   "elapsed_s": wall_before + time.perf_counter() - start}
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            window, window_start, window_molecules = {}, time.perf_counter(), 0
        if step % config.checkpoint_every == 0 or step == total_steps:
            checkpoint()
    bar.close()
    wall = wall_before + time.perf_counter() - start
    settings = {
        **asdict(config), "device": str(device), "torch_version": torch.__version__,
        "molecule_file": config.molecule_file or str(default_molecule_file().name),
        "molecule_rows": f"0..{(config.molecules or len(graphs) + len(skipped)) - 1}",
        "molecules_used": len(graphs), "molecules_skipped": len(skipped),
        "skipped_examples": [list(s) for s in skipped[:10]],
        "steps": step, "steps_per_epoch": steps_per_epoch, "wall_seconds": wall,
        "molecules_per_s": float(np.mean([r["molecules_per_s"] for r in log])) if log else None,
        "threads": torch.get_num_threads(),
        "files": {"encoder": "encoder.pth", "resume": "resume.pt", "log": "training_log.csv",
                  "settings": "settings.json"},
    }
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return PretrainRun(encoder=encoder, heads=heads, step=step, log=log, settings=settings)


def evaluate_objectives(encoder: PretrainedGNN, heads: nn.ModuleDict, graphs: Sequence[Data],
                        seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """Loss and accuracy of every objective on ``graphs`` in eval mode, with masks/centres drawn from ``seed``.

    The same ``graphs`` and ``seed`` give the same masks and centres, so checkpoints can be compared.

    Examples
    --------
    >>> graphs, _ = load_molecule_graphs(molecules=16)
    >>> encoder, heads = init_models(PretrainConfig(objective="both", num_layer=2, emb_dim=8))
    >>> scores = evaluate_objectives(encoder, heads, graphs)
    >>> sorted(scores), all(loss > 0 for loss, _ in scores.values())
    (['attrmask', 'contextpred'], True)
    """
    modes = encoder.training, heads.training
    encoder.eval()
    heads.eval()
    device = next(encoder.parameters()).device
    with torch.no_grad():
        scores = {name: head(encoder, graphs, torch.Generator().manual_seed(seed), device)
                  for name, head in heads.items()}
    encoder.train(modes[0])
    heads.train(modes[1])
    return {name: (loss.item(), accuracy) for name, (loss, accuracy) in scores.items()}
