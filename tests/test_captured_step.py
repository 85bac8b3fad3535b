"""Padded batches and the captured outer step against the plain fast path (the oracle).

Padding must change nothing: a batch padded to a capacity gives the unpadded batch's loss, every
gradient and the BatchNorm updates (float64 shows the mathematics agree to ~1e-12; in float32
tiny gradients differ by summation order). The static-batch mechanics of :class:`CapturedStep` run
eagerly on any device; its CUDA-graph replay is checked where a GPU is present.
"""
import copy

import numpy as np
import pytest
import torch

from deepchem_pintuning.batched_meta_training import DeviceDataset, meta_gradients
from deepchem_pintuning.captured_step import CapturedStep, capacity_for
from deepchem_pintuning.episode_batch import BatchCapacity, CapacityExceeded
from deepchem_pintuning.episodes import EpisodeSampler
from deepchem_pintuning.model import PinTuningModel

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder_dropout=0.0,
            context_dropout=0.0, n_shot=5, inner_lr=0.1, meta_lr=3e-3)


def _steps(data, n_steps, per_step=4, seed=0):
    sampler = EpisodeSampler(data, TINY["n_shot"], seed=seed)
    tasks = data.train_tasks
    return [[sampler.sample(tasks[(k * per_step + i) % len(tasks)]) for i in range(per_step)] for k in range(n_steps)]


def _molecules(episodes):
    return np.stack([np.concatenate([e.support, e.query]) for e in episodes])


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}


def _step(module, batch, regularizer):
    for p in module.parameters():
        p.grad = None
    parts, states = meta_gradients(module, [batch], regularizer)
    for state in states:
        state.apply()
    return {k: float(v) for k, v in parts.items()}, _grads(module), {n: b.clone() for n, b in module.named_buffers()}


def _assert_same(first, second, tol=1e-10):
    """Same loss parts, gradients and buffers, to ``tol`` of the largest gradient (buffer) entry: a
    gradient that is zero up to rounding (~1e-17) has no digits of its own to compare."""
    (parts_1, grads_1, buffers_1), (parts_2, grads_2, buffers_2) = first, second
    assert parts_1 == pytest.approx(parts_2, rel=tol)
    assert grads_1.keys() == grads_2.keys()
    for name, (one, two) in (("gradient", (grads_1, grads_2)), ("buffer", (buffers_1, buffers_2))):
        scale = max(float(t.double().abs().max()) for t in one.values() if t.numel())
        for key in one:
            assert float((one[key].double() - two[key].double()).abs().max()) <= tol * scale, f"{name} {key}"


@pytest.mark.parametrize("encoder,per_step", [("gcn_scratch", 4), ("gin_scratch", 4), ("gcn_scratch", 1)])
def test_padded_batch_gives_the_unpadded_step(cld, float64, encoder, per_step):
    model = PinTuningModel.for_dataset(cld, seed=0, encoder=encoder, **TINY)
    model.model.train()
    padded_model = copy.deepcopy(model.model)
    episodes = _steps(cld, 1, per_step)[0]
    dataset, frozen = DeviceDataset(cld), model._frozen(cld)
    needed = BatchCapacity.needed(dataset.graphs, _molecules(episodes))
    slots = needed.atom_slots + 5
    capacity = BatchCapacity(slots, min(needed.atoms + 37, per_step * slots), needed.bonds + 301)
    plain = dataset.batch(episodes, None, frozen)
    padded = dataset.batch(episodes, None, frozen, capacity=capacity)
    assert padded.graphs.atom_slot.numel() == capacity.atoms and padded.graphs.n_atom_slots == capacity.atom_slots
    assert padded.graphs.source.numel() == capacity.bonds + capacity.atoms        # bonds, then one self loop each
    assert torch.equal(padded.graphs.atom_mask.sum(), plain.graphs.atom_mask.sum())  # padding atoms are not atoms
    _assert_same(_step(model.model, plain, model.regularizer), _step(padded_model, padded, model.regularizer))


def test_padding_entries_take_distinct_matrix_positions(cld):
    episodes = _steps(cld, 1)[0]
    dataset = DeviceDataset(cld)
    needed = BatchCapacity.needed(dataset.graphs, _molecules(episodes))
    # more padding bonds than a batch has atom slots: they spread over several free rows
    capacity = BatchCapacity(needed.atom_slots + 2, needed.atoms + 5, needed.bonds + 4 * (needed.atom_slots + 2) * 4)
    graphs = dataset.batch(episodes, capacity=capacity).graphs
    n_slots = graphs.n_groups * graphs.n_atom_slots
    for rows, cols in ((graphs.target, graphs.source), (graphs.atom_owner, graphs.atom_slot)):
        positions = rows * n_slots + cols
        assert positions.unique().numel() == positions.numel()


def test_a_batch_larger_than_the_capacity_is_refused(cld):
    episodes = _steps(cld, 1)[0]
    dataset = DeviceDataset(cld)
    needed = BatchCapacity.needed(dataset.graphs, _molecules(episodes))
    for small in (BatchCapacity(needed.atom_slots - 1, needed.atoms, needed.bonds),
                  BatchCapacity(needed.atom_slots, needed.atoms, needed.bonds - 1)):
        with pytest.raises(CapacityExceeded, match="more than the batch capacity"):
            dataset.batch(episodes, capacity=small)
    too_many_atoms = BatchCapacity(needed.atom_slots, len(episodes) * needed.atom_slots + 1, needed.bonds)
    with pytest.raises(ValueError, match="atom entries needs at least that many slots"):
        dataset.batch(episodes, capacity=too_many_atoms)
    with pytest.raises(ValueError, match="without separate support and query parts"):
        dataset.batch(episodes, capacity=needed, separate_parts=True)


def test_capacity_for_holds_every_sampled_step(cld):
    dataset = DeviceDataset(cld)
    steps = [_molecules(episodes) for episodes in _steps(cld, 12)]
    capacity = capacity_for(dataset.graphs, steps)
    needed = [BatchCapacity.needed(dataset.graphs, m) for m in steps]
    assert all(capacity.holds(n) for n in needed)
    assert capacity.atom_slots >= 1.1 * max(n.atom_slots for n in needed)
    assert capacity.atoms <= len(steps[0]) * capacity.atom_slots


def _static_steps(data, capture, device=None):
    """Three steps of a CapturedStep and of the plain fast path on fresh padded batches, same weights."""
    model = PinTuningModel.for_dataset(data, seed=0, encoder="gcn_scratch", device=device, **TINY)
    model.model.train()
    oracle = copy.deepcopy(model.model)
    dataset, frozen = DeviceDataset(data, model.device), model._frozen(data)
    steps = _steps(data, 3)
    capacity = capacity_for(dataset.graphs, [_molecules(e) for e in steps])
    captured = CapturedStep(model.model, model.regularizer, capacity, capture=capture)
    results = []
    for episodes in steps:
        for p in model.model.parameters():
            p.grad = None
        parts, states = captured(dataset.batch(episodes, None, frozen, capacity=capacity))
        for state in states:
            state.apply()
        got = ({k: float(v) for k, v in parts.items()}, _grads(model.model),
               {n: b.clone() for n, b in model.model.named_buffers()})
        expected = _step(oracle, dataset.batch(episodes, None, frozen, capacity=capacity), model.regularizer)
        results.append((got, expected))
        with torch.no_grad():       # an optimiser step, the same on both: later steps see new weights
            for (name, p), q in zip(model.model.named_parameters(), oracle.parameters()):
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
                    q.sub_(0.1 * q.grad)
    assert captured.replays == (len(steps) if capture else 0)     # replayed, not fallen back to eager steps
    return results


def test_static_batch_steps_equal_fresh_batches(cld, float64):
    results = _static_steps(cld, capture=False)
    for got, expected in results:
        _assert_same(got, expected)
    assert results[0][0][0] != pytest.approx(results[1][0][0])     # the steps did see different batches


def test_captured_step_refuses_unpadded_batches(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    step = CapturedStep(model.model, model.regularizer, BatchCapacity(1, 1, 1), capture=False)
    with pytest.raises(ValueError, match="padded batches"):
        step(DeviceDataset(cld).batch(_steps(cld, 1)[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captured_step_replays_the_eager_step_on_gpu(cld):
    results = _static_steps(cld, capture=True, device=torch.device("cuda"))
    for got, expected in results:
        _assert_same(got, expected, tol=1e-4)     # float32: summation order differs between kernels


def test_fit_with_padded_static_batches_equals_plain_fit(cld, float64, monkeypatch):
    """``model.cuda_graph``: fit pads every step to one capacity and steps on a static batch (on a CPU
    without a graph); three outer steps give the plain fast path's weights."""
    taken = []
    try_step = CapturedStep.try_step
    monkeypatch.setattr(CapturedStep, "try_step", lambda self, *a: taken.append(try_step(self, *a)) or taken[-1])
    weights = []
    for cuda_graph in (False, True):
        model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
        model.episodes_per_pass, model.cuda_graph = None, cuda_graph
        model.fit(cld, steps=3, seed=0, progress=False)
        weights.append({n: p.detach().clone() for n, p in model.model.named_parameters() if p.requires_grad})
    assert len(taken) == 3 and all(result is not None for result in taken)   # every step on the static batch
    assert [h["replayed"] for h in model.history] == [False] * 3                 # no graph on a CPU
    plain, padded = weights
    assert all(torch.allclose(plain[n], padded[n], rtol=0, atol=1e-10) for n in plain)


def test_a_failed_capture_falls_back_to_eager_steps(cld, float64, monkeypatch, caplog):
    def refuse(self, params):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(CapturedStep, "_capture", refuse)
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    model.model.train()
    oracle = copy.deepcopy(model.model)
    dataset, frozen, episodes = DeviceDataset(cld), model._frozen(cld), _steps(cld, 1)[0]
    capacity = capacity_for(dataset.graphs, [_molecules(episodes)])
    step = CapturedStep(model.model, model.regularizer, capacity, capture=True)
    with caplog.at_level("WARNING"):
        parts, states = step(dataset.batch(episodes, None, frozen, capacity=capacity))
    assert "capture failed" in caplog.text and step.capture is False
    for state in states:
        state.apply()
    got = ({k: float(v) for k, v in parts.items()}, _grads(model.model),
           {n: b.clone() for n, b in model.model.named_buffers()})
    _assert_same(got, _step(oracle, dataset.batch(episodes, None, frozen, capacity=capacity), model.regularizer))


def test_the_captured_step_is_kept_across_fit_calls_while_nothing_changes(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    model.episodes_per_pass, model.cuda_graph = None, True
    model.fit(cld, steps=1, seed=0, progress=False)
    first = model._captured[1]
    model.fit(cld, steps=1, seed=7, progress=False)                  # another seed: the same capacity and step
    assert model._captured[1] is first
    model.config.inner_lr = 0.05                                      # a setting the graph would have baked in
    model.fit(cld, steps=1, seed=7, progress=False)
    assert model._captured[1] is not first


def test_a_batch_that_does_not_fit_runs_eagerly(cld):
    """A batch larger than the capacity is declined, and so is one with no free atom slot (every group at
    the capacity) for its padding bonds."""
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    episodes = [_steps(cld, 1, per_step=1)[0][0]] * 2                # two identical groups: equal atom counts
    dataset = DeviceDataset(cld)
    needed = BatchCapacity.needed(dataset.graphs, _molecules(episodes))
    full = CapturedStep(model.model, model.regularizer, BatchCapacity(needed.atom_slots, needed.atoms,
                                                                      needed.bonds + 8), capture=False)
    assert full.try_step(dataset, episodes, None, 0) is None
    with pytest.raises(CapacityExceeded, match="padding bonds do not fit"):
        dataset.batch(episodes, capacity=full.capacity)
    small = CapturedStep(model.model, model.regularizer, BatchCapacity(needed.atom_slots - 1, needed.atoms,
                                                                       needed.bonds), capture=False)
    assert small.try_step(dataset, episodes, None, 0) is None        # more than the capacity: run eagerly
    roomy = CapturedStep(model.model, model.regularizer, BatchCapacity(needed.atom_slots + 1, needed.atoms,
                                                                       needed.bonds + 8), capture=False)
    assert roomy.try_step(dataset, episodes, None, 0) is not None


def test_a_pass_state_copy_applies_the_same_records_and_leaves_them_to_the_original():
    """A replay refreshes its recorded statistics in place; each step applies a copy of the records."""
    from deepchem_pintuning.grouped_ops import PassState
    norm = torch.nn.BatchNorm1d(3)
    state = PassState()
    state.record(norm, torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 2.0, 2.0]]))
    state.copy().apply()
    assert torch.allclose(norm.running_mean, torch.tensor([0.1, 0.2, 0.3]))
    state.copy().apply()                                              # the original still holds its records
    assert torch.allclose(norm.running_mean, torch.tensor([0.19, 0.38, 0.57]))
    state.apply()
    assert state.copy()._stats == {} and int(norm.num_batches_tracked) == 3
