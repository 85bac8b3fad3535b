"""The Pin-Tuning network: frozen encoder -> context graph -> adapted encoder -> classifier.

For one episode (support + query molecules, target property, auxiliary properties)::

    f_i       = FrozenEncoder(mol_i)                                 (molecule vectors, no gradient)
    nodes     = ContextEncoder(property embeddings, f, label edges)  (context_graph.py)
    c_p       = nodes[target property],  c_m,i = nodes[mol_i]
    a_i       = AdaptedEncoder(mol_i; MP-Adapters fed with c_m,i and c_p)   (adapters.py)
    logit_i   = MLP([f_i || c_m,i || c_p || a_i])
    g         = c_p + sigmoid(mean_{i in support} c_m,i)             (episode vector, contrastive loss)

The adapted encoder is a copy of the pre-trained one whose weights are frozen except the embedding
tables (regularised by Emb-BWC, emb_bwc.py).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch_geometric.data import Batch

from deepchem_pintuning.adapters import MPAdapterStack
from deepchem_pintuning.context_graph import ContextEncoder, LabelEdges
from deepchem_pintuning.encoder import PretrainedGNN, build_encoder


_AT_LEAST = {"num_layer": 1, "emb_dim": 1, "adapter_dim": 1, "context_num_layers": 1, "context_edge_hidden": 1,
             "fisher_molecules": 1, "n_shot": 1, "n_query": 1, "tasks_per_step": 1, "episodes_per_task": 1,
             "inner_steps": 0, "eval_query_chunk": 1}
_CHOICES = {"context_layers": {"all", "first", "none"}, "context_projection": {"dense", "separate"},
            "emb_bwc": {"identity", "fisher", "embedding_fisher", "inner_step", "none", "frozen"},
            "deployment_adaptation": {"train", "eval"}, "eval_query_order": {"index", "class_sorted"}}


@dataclass
class PinTuningConfig:
    """Every setting of Pin-Tuning, with the paper's method as default.

    :meth:`official` returns the behaviour of the official code where it differs from the paper.
    """

    # encoder
    encoder: str = "gcn_supervised_contextpred"
    encoder_path: Optional[str] = None
    num_layer: int = 5
    emb_dim: int = 300
    encoder_dropout: float = 0.1
    frozen_encoder_train_mode: bool = False  # official: the frozen copy runs in train mode
    separate_bn_batches: bool = False        # official: encoders and classifier see support and query as two batches
    # MP-Adapters
    adapters: bool = True                    # False: no MP-Adapters (ablation "w/o adapter")
    adapter_dim: int = 50
    context_layers: str = "all"              # official: "first"
    context_projection: str = "dense"        # official: "separate"
    adapter_layer_norm: bool = True
    # context graph
    context_num_layers: int = 2
    context_edge_hidden: int = 100
    context_dropout: float = 0.1
    top_k: Optional[int] = None              # None: n_shot - 1
    query_aux_offset: int = 0                # official: -1 (inherited off-by-one)
    hide_query_aux: float = 0.0              # fraction of training episodes whose query has no auxiliary labels
    shuffle_aux: bool = False                # official: auxiliary properties in a fresh random order per episode
    kekulize: bool = False                   # official: molecules kekulized (the data must be featurized so)
    # Emb-BWC
    emb_bwc: str = "identity"                # identity | fisher | embedding_fisher | inner_step | none | frozen
    emb_bwc_weight: float = 1.0
    fisher_molecules: int = 2000
    # episodes and meta-training
    n_shot: int = 10
    n_query: int = 16
    tasks_per_step: int = 5
    episodes_per_task: int = 2
    inner_lr: float = 0.5
    inner_steps: int = 1
    second_order: bool = True
    meta_lr: float = 1e-3
    weight_decay: float = 5e-5
    grad_clip: float = 1.0
    contrastive_weight: float = 0.0          # official: 0.05
    contrastive_temperature: float = 0.08
    # evaluation
    eval_query_chunk: int = 128
    eval_query_order: str = "index"          # official: "class_sorted" (inactives first, so chunks are ~class-pure)
    deployment_adaptation: str = "train"     # inductive scoring: adaptation step in "train" or "eval" mode
    restore_batchnorm_after_eval: bool = True  # official: False (running statistics leak across test tasks)

    def __post_init__(self) -> None:
        """Refuse settings the model cannot run with, naming the setting (``ValueError``)."""
        problems = [f"{name} must be at least {low}, got {getattr(self, name)}" for name, low in _AT_LEAST.items()
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < low]
        problems += [f"{name} must be one of {sorted(options)}, got {getattr(self, name)!r}"
                     for name, options in _CHOICES.items() if getattr(self, name) not in options]
        problems += [f"{name} must be in [0, 1), got {getattr(self, name)}"
                     for name in ("encoder_dropout", "context_dropout") if not 0 <= getattr(self, name) < 1]
        if not 0 <= self.hide_query_aux <= 1:
            problems.append(f"hide_query_aux must be in [0, 1], got {self.hide_query_aux}")
        if self.top_k is not None and self.top_k < 0:
            problems.append(f"top_k must be None or at least 0, got {self.top_k}")
        if problems:
            raise ValueError("Pin-Tuning settings: " + "; ".join(problems))

    @classmethod
    def official(cls, **overrides) -> "PinTuningConfig":
        """Settings of the official code (CRIPAC-DIG/Pin-Tuning) where it departs from the paper."""
        settings = dict(context_layers="first", context_projection="separate", emb_bwc="inner_step",
                        contrastive_weight=0.05, query_aux_offset=-1, frozen_encoder_train_mode=True,
                        restore_batchnorm_after_eval=False, shuffle_aux=True, kekulize=True, separate_bn_batches=True,
                        eval_query_order="class_sorted")
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def for_protocol(cls, protocol: str, **overrides) -> "PinTuningConfig":
        """The settings of ``protocol`` (``"paper"`` or ``"official"``, see :meth:`official`) with ``overrides``.

        Examples
        --------
        >>> PinTuningConfig.for_protocol("official", n_shot=5).context_layers
        'first'
        """
        return cls.official(**overrides) if protocol == "official" else cls(**overrides)

    @classmethod
    def from_dict(cls, values: Dict) -> "PinTuningConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown Pin-Tuning settings: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> Dict:
        return asdict(self)

    @property
    def similarity_top_k(self) -> int:
        return self.top_k if self.top_k is not None else self.n_shot - 1


def published_hyperparameters(dataset: str, n_shot: int) -> Dict:
    """Per-dataset settings of the official run scripts (everything else uses the defaults).

    Examples
    --------
    >>> published_hyperparameters("tox21", 10)
    {'n_shot': 10, 'inner_lr': 0.05, 'meta_lr': 0.0001, 'emb_bwc_weight': 0.1}
    >>> published_hyperparameters("sider", 5)
    {'n_shot': 5, 'inner_lr': 0.5, 'meta_lr': 0.001, 'emb_bwc_weight': 1.0}
    """
    tox21 = dataset == "tox21"
    return {"n_shot": n_shot, "inner_lr": 0.05 if tox21 else 0.5, "meta_lr": 1e-4 if tox21 else 1e-3,
            "emb_bwc_weight": 0.1 if dataset in ("tox21", "pcba") and n_shot == 10 else 1.0}


@dataclass
class EpisodeInputs:
    """Tensors of one episode (or of one support + query-chunk graph at evaluation)."""

    graphs: object                 # PyG batch: support molecules first, then query molecules
    frozen: Optional[torch.Tensor]  # cached frozen-encoder vectors [n_mols, d], or None
    property_ids: torch.Tensor     # [target, aux...] rows of the property embedding
    label_edges: LabelEdges
    n_support: int
    support_labels: torch.Tensor   # [n_support]
    query_labels: Optional[torch.Tensor] = None


class PinTuning(nn.Module):
    """The Pin-Tuning network (see the module docstring).

    Parameters
    ----------
    config: PinTuningConfig
    n_properties: int
        Rows of the property embedding (all properties of the dataset).
    test_property_ids: sequence of int
        Rows zeroed at initialisation (properties never seen in meta-training).
    encoder: PretrainedGNN, optional
        Pre-built encoder; by default :func:`build_encoder` with ``config.encoder``.
    """

    def __init__(self, config: PinTuningConfig, n_properties: int,
                 test_property_ids: Sequence[int] = (), encoder: Optional[PretrainedGNN] = None):
        super().__init__()
        self.config = config
        d = config.emb_dim
        pretrained = encoder or build_encoder(config.encoder, config.encoder_path, config.num_layer, d,
                                              config.encoder_dropout)
        self.frozen_encoder = copy.deepcopy(pretrained)
        self.frozen_encoder.requires_grad_(False)
        self.encoder = copy.deepcopy(pretrained)
        tables = set(self.encoder.embedding_tables())
        for name, parameter in self.encoder.named_parameters():
            parameter.requires_grad_(name in tables and config.emb_bwc != "frozen")
        self.adapters = MPAdapterStack(config.num_layer, d, config.adapter_dim, config.context_layers,
                                       config.context_projection, config.adapter_layer_norm) \
            if config.adapters else None
        self.property_embedding = nn.Embedding(n_properties, d)
        nn.init.normal_(self.property_embedding.weight)
        with torch.no_grad():
            self.property_embedding.weight[list(test_property_ids)] = 0.0
        self.context = ContextEncoder(d, config.context_num_layers, config.similarity_top_k,
                                      config.context_edge_hidden, config.context_dropout)
        self.classifier = nn.Sequential(nn.Linear(4 * d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, 1))

    def train(self, mode: bool = True) -> "PinTuning":
        super().train(mode)
        self.frozen_encoder.train(mode and self.config.frozen_encoder_train_mode)
        return self

    def trainable_parameters(self) -> Dict[str, nn.Parameter]:
        """Parameters that meta-training and the inner loop update."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def embedding_table_names(self) -> List[str]:
        return [f"encoder.{name}" for name in self.encoder.embedding_tables()]

    def frozen_vectors(self, graphs) -> torch.Tensor:
        with torch.no_grad():
            return self.frozen_encoder.embed(graphs)

    def batchnorm_parts(self, inputs: EpisodeInputs) -> List[Tuple[slice, object]]:
        """``(molecule slice, PyG batch)`` pairs that the encoders and the classifier see as batches.

        One joint batch, or with ``separate_bn_batches`` (official code) the support and the query
        molecules as two batches, which matters for BatchNorm in train mode (batch statistics).
        """
        graphs, n_support = inputs.graphs, inputs.n_support
        if not self.config.separate_bn_batches or graphs.num_graphs == n_support:
            return [(slice(None), graphs)]
        return [(part, Batch.from_data_list(graphs.index_select(range(graphs.num_graphs)[part])))
                for part in (slice(0, n_support), slice(n_support, graphs.num_graphs))]

    def forward(self, inputs: EpisodeInputs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits for every molecule, episode vector)``."""
        parts = self.batchnorm_parts(inputs)
        frozen = inputs.frozen if inputs.frozen is not None else \
            torch.cat([self.frozen_vectors(graphs) for _, graphs in parts])
        n_props = inputs.property_ids.numel()
        nodes = self.context(self.property_embedding(inputs.property_ids), frozen, inputs.label_edges)
        prop_context, mol_context = nodes[0], nodes[n_props:]
        adapted = torch.cat([
            self.encoder.embed(graphs, None if self.adapters is None else
                               self.adapters.hook(mol_context[part][graphs.batch],
                                                  prop_context.expand(graphs.x.size(0), -1)))
            for part, graphs in parts])
        features = torch.cat([frozen, mol_context, prop_context.expand_as(frozen), adapted], dim=1)
        episode_vector = prop_context + torch.sigmoid(mol_context[:inputs.n_support].mean(0))
        logits = torch.cat([self.classifier(features[part]) for part, _ in parts])
        return logits.squeeze(-1), episode_vector

    def parameter_summary(self) -> Dict[str, int]:
        """Parameter counts: frozen, tuned, and per block.

        The frozen copy of the encoder is counted under ``frozen_encoder``; ``encoder_frozen_part``
        is what stays frozen in the adapted copy (everything but the embedding tables).
        """
        def count(module: nn.Module, trainable: Optional[bool] = None) -> int:
            return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)

        return {
            "frozen_encoder": count(self.frozen_encoder),
            "encoder_embedding_tables": sum(p.numel() for p in self.encoder.embedding_tables().values()),
            "encoder_frozen_part": count(self.encoder, trainable=False),
            "adapters": count(self.adapters) if self.adapters is not None else 0,
            "context_encoder": count(self.context),
            "property_embedding": count(self.property_embedding),
            "classifier": count(self.classifier),
            "trainable": count(self, trainable=True),
            "frozen": count(self, trainable=False),
        }
