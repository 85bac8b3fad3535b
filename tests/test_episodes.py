"""Episode sampling: K+K support, disjoint query, seeded, missing labels excluded, clear errors."""
import numpy as np
import pytest

from deepchem_pintuning.episodes import (EpisodeSampler, InsufficientLabelsError, evaluation_episode,
                                         evaluation_episodes)


@pytest.mark.parametrize("n_shot", [1, 5, 10])
def test_training_episode_structure(tox21, n_shot):
    sampler = EpisodeSampler(tox21, n_shot=n_shot, seed=1)
    for _ in range(20):
        ep = sampler.sample()
        assert ep.task in tox21.train_tasks
        column = tox21.labels[:, ep.task_index]
        assert len(ep.support) == 2 * n_shot and ep.support_labels.sum() == n_shot
        np.testing.assert_array_equal(ep.support_labels, column[ep.support])
        np.testing.assert_array_equal(ep.query_labels, column[ep.query])
        assert not np.isnan(column[np.concatenate([ep.support, ep.query])]).any()
        assert len(ep.query) == 16 and 1 <= ep.query_labels.sum() <= 15
        assert not set(ep.support) & set(ep.query)
        assert len(set(ep.query)) == len(ep.query)
        aux = [tox21.tasks[i] for i in ep.aux_task_indices]
        assert sorted(aux) == sorted(t for t in tox21.train_tasks if t != ep.task)


def test_sampler_is_reproducible(tox21):
    a = [EpisodeSampler(tox21, n_shot=10, seed=7).sample() for _ in range(3)]
    b = [EpisodeSampler(tox21, n_shot=10, seed=7).sample() for _ in range(3)]
    c = EpisodeSampler(tox21, n_shot=10, seed=8).sample()
    for x, y in zip(a, b):
        assert x.task == y.task and np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query)
    assert not np.array_equal(a[0].support, c.support)


def test_auxiliary_subsampling(tox21):
    ep = EpisodeSampler(tox21, n_shot=5, n_aux=3, seed=0).sample()
    assert len(ep.aux_task_indices) == 3 and ep.task_index not in ep.aux_task_indices


def test_evaluation_support_fixed_per_seed_and_task(tox21):
    first = evaluation_episodes(tox21, n_shot=10, seed=0)
    again = evaluation_episodes(tox21, n_shot=10, seed=0, tasks=list(reversed(tox21.test_tasks)))[::-1]
    other = evaluation_episodes(tox21, n_shot=10, seed=1)
    for x, y, z in zip(first, again, other):
        assert np.array_equal(x.support, y.support)
        assert not np.array_equal(x.support, z.support)


def test_evaluation_query_is_every_other_labelled_molecule(tox21):
    ep = evaluation_episode(tox21, "SR-MMP", n_shot=10, seed=0)
    labelled = np.flatnonzero(~np.isnan(tox21.labels[:, ep.task_index]))
    assert sorted(np.concatenate([ep.support, ep.query]).tolist()) == labelled.tolist()
    assert len(ep.aux_task_indices) == 9  # all training properties


def test_too_few_actives_names_the_property(cld):
    with pytest.raises(InsufficientLabelsError, match="CLD_ABCG2_48hr.*23 actives"):
        EpisodeSampler(cld, n_shot=25, seed=0)
    with pytest.raises(InsufficientLabelsError, match="CLD_CYP1A2_6hr"):
        evaluation_episode(cld, "CLD_CYP1A2_6hr", n_shot=200, seed=0)


def test_bad_arguments(cld):
    with pytest.raises(ValueError, match="n_query"):
        EpisodeSampler(cld, n_shot=5, n_query=1)
    with pytest.raises(KeyError, match="no property"):
        EpisodeSampler(cld, n_shot=5).sample("not-a-property")


def test_sampling_without_setdiff1d_draws_the_same_episodes(cld, monkeypatch):
    """Episodes remove drawn molecules by binary search; np.setdiff1d (the oracle) gives the same episodes."""
    import deepchem_pintuning.episodes as episodes_module

    def draw():
        sampler = EpisodeSampler(cld, n_shot=5, seed=3)
        return [sampler.sample() for _ in range(40)]

    fast = draw()
    monkeypatch.setattr(episodes_module, "_without", lambda values, removed: np.setdiff1d(values, removed))
    oracle = draw()
    for a, b in zip(fast, oracle):
        assert a.task == b.task and np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = np.unique(rng.integers(0, 500, 60))
        removed = rng.choice(values, rng.integers(0, len(values)), replace=False)
        assert np.array_equal(episodes_module._without(values, removed), np.setdiff1d(values, removed))
