"""DeepChem's torch MAML on few-shot episodes: EpisodicMAML with explicit support / query batches."""
import numpy as np
import pytest
import torch
from deepchem.metalearning.torch_maml import MAML
from deepchem.models.optimizers import Adam
from torch_geometric.utils import scatter

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episodes
from deepchem_pintuning.metalearning import EpisodicMAML, EpisodicMetaLearner

CPU = torch.device("cpu")


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


class CountingLearner(AtomTypeLearner):
    """The call-counting protocol stock MAML.fit needs (support for the first call per task, then
    query): the oracle that EpisodicMAML.fit must reproduce."""

    def select_task(self):
        super().select_task()
        self.calls = 0

    def get_batch(self):
        self.calls += 1
        return self.support_batch() if self.calls == 1 else self.query_batch()


def _query_loss(learner, episodes):
    losses = []
    for ep in episodes:
        graphs = collate_graphs([learner.sampler.data.graphs[i] for i in ep.query])
        with torch.no_grad():
            loss, _ = learner.compute_model([graphs, torch.as_tensor(ep.query_labels)], learner.variables, False)
        losses.append(loss.item())
    return float(np.mean(losses))


def _maml(learner, cls=EpisodicMAML, **kwargs):
    return cls(learner, learning_rate=0.1, optimization_steps=1, meta_batch_size=4,
               optimizer=Adam(learning_rate=1e-3), device=CPU, **kwargs)


def test_maml_meta_training_lowers_query_loss(tox21):
    learner = AtomTypeLearner(EpisodeSampler(tox21, n_shot=5, n_query=32, seed=0))
    held_out = evaluation_episodes(tox21, n_shot=5, seed=0, tasks=tox21.train_tasks)
    before = _query_loss(learner, held_out)
    start = [v.detach().clone() for v in learner.variables]
    maml = EpisodicMAML(learner, learning_rate=0.1, optimization_steps=1, meta_batch_size=4, device=CPU)
    maml.fit(40)
    after = _query_loss(learner, held_out)
    assert all(not torch.equal(a, b) for a, b in zip(start, learner.variables))
    assert after < before - 0.02, (before, after)


def test_fit_is_deepchems_maml_loop_on_the_same_episodes(cld):
    """Same episodes, same initial weights: EpisodicMAML.fit == stock MAML.fit with the counting learner."""
    ours = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=4))
    stock = CountingLearner(EpisodeSampler(cld, n_shot=3, seed=4))
    _maml(ours).fit(3)
    _maml(stock, cls=MAML).fit(3)
    for a, b in zip(ours.variables, stock.variables):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours.weight, torch.zeros(16))


def test_batches_are_named_not_counted(cld):
    learner = EpisodicMetaLearner(EpisodeSampler(cld, n_shot=3, seed=0))
    with pytest.raises(RuntimeError, match="select_task"):
        learner.support_batch()
    learner.select_task()
    sizes = [learner.support_batch()[0].num_graphs for _ in range(3)] + [learner.query_batch()[0].num_graphs]
    assert sizes == [6, 6, 6, 16]
    assert learner.support_batch()[1].sum().item() == 3
    with pytest.raises(RuntimeError, match="EpisodicMAML"):
        learner.get_batch()      # stock MAML cannot silently meta-train on the wrong half


def test_train_on_current_task_adapts_on_the_support_set(cld):
    """Looking at a batch first used to make train_on_current_task() adapt on the query set."""
    learner = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=0))
    maml = _maml(learner)
    learner.select_task()
    support = learner.support_batch()
    learner.query_batch()
    loss, _ = learner.compute_model(support, learner.variables, True)
    grads = torch.autograd.grad(loss, learner.variables)
    expected = [(v - 0.1 * g).detach() for v, g in zip(learner.variables, grads)]
    maml.train_on_current_task(optimization_steps=1, restore=False)
    for v, e in zip(learner.variables, expected):
        torch.testing.assert_close(v.detach(), e)


def test_checkpoints_hold_tensors_only_and_restore_with_weights_only(cld, tmp_path):
    learner = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=0))
    maml = _maml(learner, model_dir=str(tmp_path))
    maml.fit(2)
    checkpoint = tmp_path / "checkpoint1.pt"
    data = torch.load(checkpoint, weights_only=True)       # the default loading of torch >= 2.6
    assert set(data["model_state_dict"]) == {"state_dict"}
    assert checkpoint.stat().st_size < 100_000, checkpoint.stat().st_size   # 1,953 floats + Adam state
    trained = [v.detach().clone() for v in learner.variables]

    fresh = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=1))
    restored = _maml(fresh, model_dir=str(tmp_path))
    restored.restore()
    assert restored._global_step == 2
    for v, t in zip(fresh.variables, trained):
        assert torch.equal(v.detach(), t)


def test_fit_after_restore_trains_the_learners_own_tensors(cld, tmp_path):
    """Restoring copies into the learner's tensors, so the optimizer (bound at construction) still
    updates what compute_model uses; a rebound __dict__ would leave the model frozen."""
    _maml(AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=0)), model_dir=str(tmp_path)).fit(2)
    learner = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=1))
    own = [id(v) for v in learner.variables]
    maml = _maml(learner, model_dir=str(tmp_path))
    maml.restore()
    restored = [v.detach().clone() for v in learner.variables]
    maml.fit(2)
    assert [id(v) for v in learner.variables] == own
    assert maml._global_step == 4
    assert not torch.equal(learner.weight.detach(), restored[1])
    assert len(maml.get_checkpoints()) == 2


def test_checkpoint_of_another_shape_is_refused(cld, tmp_path):
    _maml(AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=0)), model_dir=str(tmp_path)).fit(1)
    other = AtomTypeLearner(EpisodeSampler(cld, n_shot=3, seed=0))
    other.weight = torch.nn.Parameter(torch.zeros(8))
    with pytest.raises(ValueError, match="shape"):
        _maml(other, model_dir=str(tmp_path)).restore()
