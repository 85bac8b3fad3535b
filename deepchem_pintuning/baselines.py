"""Few-shot baselines on the same episodes and metrics as Pin-Tuning.

* ``frozen``: the pre-trained encoder, frozen; a logistic-regression classifier is fitted on the
  2K support vectors of each test property (no meta-training).
* ``finetune``: the whole pre-trained encoder plus a linear head fine-tuned on the support set of
  each test property (``finetune_steps`` Adam steps; no meta-training).
* ``protonet``: the pre-trained encoder meta-trained with the prototypical loss on the training
  properties (``meta_steps`` episodes); test molecules are scored by their distance to the two
  class prototypes of the support set.
* ``maml``: the pre-trained encoder plus a linear head meta-trained with DeepChem's torch MAML
  (:class:`EpisodicMAML`, a ``deepchem.metalearning.torch_maml.MAML`` with explicit support and
  query batches; second order, one inner step) through :class:`EpisodicMetaLearner`, adapted on
  each test support set with the same inner step.
* ``ecfp_rf``: ECFP4 (Morgan radius 2, 2,048 bits) and a random forest fitted on the support set
  (FS-Mol's strong simple baseline; no encoder, no meta-training).
* ``ecfp_aux_rf``: the same forest on ``[ECFP4 || auxiliary labels]``: every molecule's labels on
  the episode's auxiliary (training) properties, 1 / 0 and 0.5 where missing. It gets exactly the
  extra information Pin-Tuning's context graph gets under the paper protocol (the query molecules'
  auxiliary labels), so it shows what those labels alone are worth.

All use :func:`evaluation_episodes`, so for a given seed they see the support sets Pin-Tuning sees.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import deepchem as dc
import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.func import functional_call

from deepchem_pintuning.batched_network import embed_molecules
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.encoder import PretrainedGNN, build_encoder
from deepchem_pintuning.episode_batch import PackedGraphs
from deepchem_pintuning.episodes import Episode, EpisodeSampler, evaluation_episodes
from deepchem_pintuning.metalearning import EpisodicMAML, EpisodicMetaLearner

BASELINES = ("frozen", "finetune", "protonet", "maml", "ecfp_rf", "ecfp_aux_rf")
FINGERPRINT_BITS = 2048
METRICS = (dc.metrics.Metric(dc.metrics.roc_auc_score, name="roc_auc"),
           dc.metrics.Metric(dc.metrics.prc_auc_score, name="pr_auc"))


class GraphClassifier(nn.Module):
    """Encoder + linear head producing one logit per molecule."""

    def __init__(self, encoder: PretrainedGNN):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.emb_dim, 1)

    def forward(self, graphs) -> torch.Tensor:
        return self.head(self.encoder.embed(graphs)).squeeze(-1)


class GNNMetaLearner(EpisodicMetaLearner):
    """:class:`EpisodicMetaLearner` around a :class:`GraphClassifier`, for DeepChem's torch MAML."""

    def __init__(self, sampler: EpisodeSampler, model: GraphClassifier, **kwargs):
        super().__init__(sampler, **kwargs)
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]

    def compute_model(self, inputs, variables, training):
        graphs, labels = inputs
        self.model.train(training)
        logits = functional_call(self.model, dict(zip(self.names, variables)), (graphs,))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels), [logits]

    @property
    def variables(self) -> List[torch.Tensor]:
        return list(self.model.parameters())

    def parameters(self):
        return self.model.parameters()


def _scores(episode: Episode, probabilities: np.ndarray) -> Dict[str, float]:
    return {m.name: float(m.compute_metric(episode.query_labels, probabilities)) for m in METRICS}


def _frozen(vectors: torch.Tensor, data, episode, **_) -> np.ndarray:
    clf = LogisticRegression(max_iter=1000).fit(vectors[episode.support].numpy(), episode.support_labels)
    return clf.predict_proba(vectors[episode.query].numpy())[:, 1]


def ecfp4(smiles: Sequence[str], bits: int = FINGERPRINT_BITS) -> np.ndarray:
    """ECFP4 bit vectors ``[n, bits]`` (uint8; all zeros for a SMILES RDKit cannot parse).

    Examples
    --------
    >>> fp = ecfp4(["CCO", "c1ccccc1"])
    >>> fp.shape, int(fp[0].sum()) > 0
    ((2, 2048), True)
    """
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=bits)
    rows = np.zeros((len(smiles), bits), dtype=np.uint8)
    with rdBase.BlockLogs():
        for i, text in enumerate(smiles):
            mol = Chem.MolFromSmiles(text)
            if mol is not None:
                rows[i] = generator.GetFingerprintAsNumPy(mol)
    return rows


def _forest(features: np.ndarray, data, episode, seed: int = 0, with_aux: bool = False, **_) -> np.ndarray:
    if with_aux:
        aux = np.nan_to_num(data.labels[:, episode.aux_task_indices], nan=0.5)
        features = np.hstack([features, aux])
    forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    forest.fit(features[episode.support], episode.support_labels)
    return forest.predict_proba(features[episode.query])[:, 1]


def _finetune(encoder, data, episode, packed: PackedGraphs, finetune_steps: int = 50, lr: float = 1e-3,
              **_) -> np.ndarray:
    model = GraphClassifier(copy.deepcopy(encoder))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    graphs = collate_graphs([data.graphs[i] for i in episode.support])
    labels = torch.as_tensor(episode.support_labels)
    model.train()
    for _ in range(finetune_steps):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(graphs), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model.head(embed_molecules(model.encoder, packed, episode.query))).squeeze(-1).numpy()


def _prototype_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Log-odds of "active" from squared distances to the inactive and active prototypes."""
    prototypes = torch.stack([support[labels < 0.5].mean(0), support[labels > 0.5].mean(0)])
    distances = torch.cdist(query, prototypes).pow(2)
    return distances[:, 0] - distances[:, 1]


def _meta_train_protonet(encoder, data, n_shot, seed, meta_steps: int = 100, lr: float = 1e-4, **_):
    encoder = copy.deepcopy(encoder)
    sampler = EpisodeSampler(data, n_shot, seed=seed)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    encoder.train()
    for _ in range(meta_steps):
        episode = sampler.sample()
        vectors = encoder.embed(collate_graphs([data.graphs[i] for i in np.concatenate([episode.support, episode.query])]))
        logits = _prototype_logits(vectors[:len(episode.support)], torch.as_tensor(episode.support_labels),
                                   vectors[len(episode.support):])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.as_tensor(episode.query_labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder.eval()


def _protonet(vectors: torch.Tensor, data, episode, **_) -> np.ndarray:
    logits = _prototype_logits(vectors[episode.support], torch.as_tensor(episode.support_labels),
                               vectors[episode.query])
    return torch.sigmoid(logits).numpy()


def _meta_train_maml(encoder, data, n_shot, seed, meta_steps: int = 50, inner_lr: float = 0.05,
                     meta_batch_size: int = 5, lr: float = 1e-4, **_):
    torch.manual_seed(seed)
    learner = GNNMetaLearner(EpisodeSampler(data, n_shot, seed=seed), GraphClassifier(copy.deepcopy(encoder)))
    maml = EpisodicMAML(learner, learning_rate=inner_lr, optimization_steps=1, meta_batch_size=meta_batch_size,
                optimizer=dc.models.optimizers.Adam(learning_rate=lr))
    maml.fit(meta_steps)
    learner.inner_lr = inner_lr
    return learner


def _maml(learner: GNNMetaLearner, data, episode, packed: PackedGraphs, **_) -> np.ndarray:
    graphs = collate_graphs([data.graphs[i] for i in episode.support])
    loss, _ = learner.compute_model([graphs, torch.as_tensor(episode.support_labels)], learner.variables, True)
    grads = torch.autograd.grad(loss, learner.variables)
    adapted = copy.deepcopy(learner.model).eval()
    with torch.no_grad():
        for weight, variable, grad in zip(adapted.parameters(), learner.variables, grads):
            weight.copy_(variable - learner.inner_lr * grad)
        return torch.sigmoid(adapted.head(embed_molecules(adapted.encoder, packed, episode.query))).squeeze(-1).numpy()


def evaluate_baseline(method: str, data: FewShotDataset, n_shot: int = 10, seed: int = 0,
                      encoder: str = "gcn_supervised_contextpred", eval_seed: Optional[int] = None,
                      **options) -> Dict:
    """Mean ROC-AUC / PR-AUC over the meta-test properties for one baseline and seed.

    ``seed`` seeds the method (meta-training, forest); the support sets are those of
    ``eval_seed`` (default ``seed``), the same for every method.

    Examples
    --------
    >>> from deepchem_pintuning.data import load_fewshot
    >>> scores = evaluate_baseline("frozen", load_fewshot("toxcast-CLD"), n_shot=5, seed=0)
    >>> 0.0 <= scores["roc_auc"] <= 1.0, len(scores["per_task"])
    (True, 5)
    """
    return evaluate_baseline_draws(method, data, n_shot, seed, [seed if eval_seed is None else eval_seed],
                                   encoder=encoder, **options)[0]


def evaluate_baseline_draws(method: str, data: FewShotDataset, n_shot: int, seed: int, eval_seeds: Sequence[int],
                            encoder: str = "gcn_supervised_contextpred", **options) -> List[Dict]:
    """:func:`evaluate_baseline` for several support-set draws, preparing the method once.

    The encoder is built, meta-trained (``protonet``, ``maml``) and, where it is fixed at test
    time (``frozen``, ``protonet``), run over every molecule once; the fingerprints are computed
    once. Each draw then starts from the same random state, so the result equals
    ``[evaluate_baseline(method, data, n_shot, seed, eval_seed=e) for e in eval_seeds]`` (tested)
    at a fraction of the cost: on MUV's 93k molecules the embedding dominates a draw.

    Examples
    --------
    >>> from deepchem_pintuning.data import load_fewshot
    >>> draws = evaluate_baseline_draws("ecfp_rf", load_fewshot("toxcast-CLD"), 5, 0, eval_seeds=[0, 1])
    >>> len(draws), draws[0]["per_task"] != draws[1]["per_task"]
    (2, True)
    """
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    if method.startswith("ecfp"):
        state, trainable = ecfp4(data.smiles), 0
        options = {"seed": seed, "with_aux": method == "ecfp_aux_rf", **options}
    else:
        torch.manual_seed(seed)
        model = build_encoder(encoder).eval()
        n_encoder, n_head = sum(p.numel() for p in model.parameters()), model.emb_dim + 1
        trainable = {"frozen": n_head, "finetune": n_encoder + n_head, "protonet": n_encoder,
                     "maml": n_encoder + n_head}[method]
        if method == "protonet":
            model = _meta_train_protonet(model, data, n_shot, seed, **options)
        elif method == "maml":
            model = _meta_train_maml(model, data, n_shot, seed, **options)
        packed = PackedGraphs(data.graphs)
        if method in ("frozen", "protonet"):  # the encoder is fixed at test time: embed every molecule once
            model = embed_molecules(model, packed, np.arange(len(data)))
        else:
            options = {**options, "packed": packed}
        state = model
    predict = {"frozen": _frozen, "finetune": _finetune, "protonet": _protonet, "maml": _maml,
               "ecfp_rf": _forest, "ecfp_aux_rf": _forest}[method]
    rng_state = torch.get_rng_state()
    results = []
    for eval_seed in eval_seeds:
        torch.set_rng_state(rng_state)  # fine-tuning's head initialisation and dropout: as if prepared anew
        per_task = {ep.task: _scores(ep, predict(state, data, ep, **options))
                    for ep in evaluation_episodes(data, n_shot, eval_seed)}
        result: Dict = {m.name: float(np.mean([s[m.name] for s in per_task.values()])) for m in METRICS}
        results.append({**result, "per_task": per_task, "trainable_parameters": trainable})
    return results
