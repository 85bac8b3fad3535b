"""DeepChem's torch MAML trains on the episodic task source."""
import numpy as np
import pytest
import torch
from deepchem.metalearning.torch_maml import MAML
from torch_geometric.utils import scatter

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episodes
from deepchem_pintuning.metalearning import EpisodicMetaLearner


class AtomTypeLearner(EpisodicMetaLearner):
    """Logistic regression on mean-pooled learned atom-type embeddings."""

    def __init__(self, sampler, **kwargs):
        super().__init__(sampler, **kwargs)
        torch.manual_seed(0)
        self.embedding = torch.nn.Parameter(0.1 * torch.randn(120, 16))
        self.weight = torch.nn.Parameter(torch.zeros(16))
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def compute_model(self, inputs, variables, training):
        graphs, labels = inputs
        embedding, weight, bias = variables
        pooled = scatter(embedding[graphs.x[:, 0]], graphs.batch, dim=0, reduce="mean")
        logits = pooled @ weight + bias
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels), [logits]

    @property
    def variables(self):
        return [self.embedding, self.weight, self.bias]

    def parameters(self):
        return iter(self.variables)


def _query_loss(learner, episodes):
    losses = []
    for ep in episodes:
        graphs = collate_graphs([learner.sampler.data.graphs[i] for i in ep.query])
        with torch.no_grad():
            loss, _ = learner.compute_model([graphs, torch.as_tensor(ep.query_labels)], learner.variables, False)
        losses.append(loss.item())
    return float(np.mean(losses))


def test_maml_meta_training_lowers_query_loss(tox21):
    learner = AtomTypeLearner(EpisodeSampler(tox21, n_shot=5, n_query=32, seed=0))
    held_out = evaluation_episodes(tox21, n_shot=5, seed=0, tasks=tox21.train_tasks)
    before = _query_loss(learner, held_out)
    start = [v.detach().clone() for v in learner.variables]
    maml = MAML(learner, learning_rate=0.1, optimization_steps=1, meta_batch_size=4)
    maml.fit(40)
    after = _query_loss(learner, held_out)
    assert all(not torch.equal(a, b) for a, b in zip(start, learner.variables))
    assert after < before - 0.02, (before, after)


def test_batches_follow_support_then_query(cld):
    learner = EpisodicMetaLearner(EpisodeSampler(cld, n_shot=3, seed=0), inner_steps=2)
    learner.select_task()
    sizes = [learner.get_batch()[0].num_graphs for _ in range(3)]
    assert sizes == [6, 6, 16]
    with pytest.raises(RuntimeError, match="get_batch"):
        learner.get_batch()
    learner.select_task()
    assert learner.get_batch()[1].sum().item() == 3
