"""The episode-batched fast path against the per-episode reference (the test oracle).

Float64 checks show the mathematics is the same (agreement to ~1e-12); float32 checks bound what a
user sees. Dropout is off wherever two paths are compared value by value (their masks differ).
"""
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from deepchem_pintuning.batched_meta_training import DeviceDataset, batched_predict_episode, meta_gradients
from deepchem_pintuning.batched_network import ParamView, embed_molecules, encode
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.context_graph import label_edges
from deepchem_pintuning.encoder import PretrainedGNN
from deepchem_pintuning.episode_batch import gather_graphs
from deepchem_pintuning.grouped_ops import PassState
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episode
from deepchem_pintuning.meta_training import episode_inputs, meta_loss, predict_episode
from deepchem_pintuning.model import PinTuningModel

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder_dropout=0.0,
            context_dropout=0.0, n_shot=5, inner_lr=0.1, meta_lr=3e-3)


def _episodes(data, n_tasks=3, per_task=2, seed=0):
    sampler = EpisodeSampler(data, TINY["n_shot"], seed=seed)
    return [sampler.sample(t) for t in data.train_tasks[:n_tasks] for _ in range(per_task)]


def _reference_and_fast(data, protocol, encoder, second_order, per_pass, workers=1, hidden=(), **overrides):
    """Loss, gradients and BatchNorm buffers after one outer step, reference vs fast path, same weights.

    Episodes whose position is in ``hidden`` give their query molecules no auxiliary labels.
    """
    model = PinTuningModel.for_dataset(data, seed=0, protocol=protocol, encoder=encoder,
                                       second_order=second_order, **{**TINY, **overrides})
    reference, fast = model.model, copy.deepcopy(model.model)
    reference.train(), fast.train()
    episodes = [replace(e, query_aux_hidden=i in hidden) for i, e in enumerate(_episodes(data))]
    frozen = model._frozen(data)
    offset = model.config.query_aux_offset
    inputs = [(data.task_index(e.task), episode_inputs(data, e, None, frozen, offset)) for e in episodes]
    loss, parts = meta_loss(reference, inputs, model.regularizer)
    loss.backward()
    dataset = DeviceDataset(data)
    batches = [dataset.batch(episodes[i:i + per_pass], None, frozen, offset, model.config.separate_bn_batches)
               for i in range(0, len(episodes), per_pass)]
    fast_parts, states = meta_gradients(fast, batches, model.regularizer, workers)
    for state in states:
        state.apply()
    return (reference, parts), (fast, {k: float(v) for k, v in fast_parts.items()})


def _gradients(module):
    return {n: p.grad for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("protocol,encoder,second_order,per_pass", [
    ("paper", "gcn_scratch", True, 6),
    ("paper", "gin_scratch", False, 6),
    ("official", "gin_scratch", True, 6),
    ("official", "gcn_scratch", True, 1),
    ("paper", "gcn_scratch", True, 4),   # uneven passes: 4 + 2 episodes
])
def test_fast_step_equals_reference_in_float64(cld, float64, protocol, encoder, second_order, per_pass):
    (reference, parts), (fast, fast_parts) = _reference_and_fast(cld, protocol, encoder, second_order, per_pass)
    assert fast_parts.keys() == parts.keys()
    for key in parts:
        assert fast_parts[key] == pytest.approx(parts[key], rel=1e-12, abs=1e-14), key
    ref_grads, fast_grads = _gradients(reference), _gradients(fast)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for name, g in ref_grads.items():
        # parameters feeding a train-mode BatchNorm (biases, LayerNorm affine) have exactly zero gradient
        # in exact arithmetic; both paths give rounding noise there, hence the absolute floor
        assert torch.allclose(fast_grads[name], g, rtol=1e-9, atol=1e-12 * scale), name
    for (name, a), (_, b) in zip(reference.named_buffers(), fast.named_buffers()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("ablation", [{"adapters": False}, {"context_layers": "none"}, {"adapter_layer_norm": False},
                                      {"emb_bwc": "none"}, {"emb_bwc": "frozen"}])
def test_ablation_variants_keep_both_paths_equal(cld, float64, ablation):
    """The switches of the paper's ablation tables (benchmarks/ablations.py) in both paths alike."""
    (reference, parts), (fast, fast_parts) = _reference_and_fast(cld, "paper", "gcn_scratch", True, 6, **ablation)
    assert fast_parts["loss"] == pytest.approx(parts["loss"], rel=1e-12)
    ref_grads, fast_grads = _gradients(reference), _gradients(fast)
    assert ref_grads.keys() == fast_grads.keys()
    scale = max(float(g.abs().max()) for g in ref_grads.values() if g is not None)
    assert all(g is None and fast_grads[n] is None or torch.allclose(fast_grads[n], g, rtol=1e-9, atol=1e-12 * scale)
               for n, g in ref_grads.items())
    if ablation == {"adapters": False}:
        assert reference.adapters is None and reference.parameter_summary()["adapters"] == 0


def test_hidden_query_auxiliary_labels_change_the_step_alike(cld, float64):
    """Training for deployment (PinTuningConfig.hide_query_aux): both paths drop the same label edges."""
    (reference, parts), (fast, fast_parts) = _reference_and_fast(cld, "paper", "gcn_scratch", True, 3, hidden=(1, 4))
    assert fast_parts["loss"] == pytest.approx(parts["loss"], rel=1e-12)
    (_, visible), _ = _reference_and_fast(cld, "paper", "gcn_scratch", True, 3)
    assert visible["loss"] != pytest.approx(parts["loss"], rel=1e-6)
    ref_grads, fast_grads = _gradients(reference), _gradients(fast)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    assert all(torch.allclose(fast_grads[n], g, rtol=1e-9, atol=1e-12 * scale) for n, g in ref_grads.items())


def test_fast_step_in_float32_within_1e5_of_reference(cld):
    (reference, parts), (fast, fast_parts) = _reference_and_fast(cld, "paper", "gcn_scratch", True, 6)
    ref = torch.cat([g.flatten() for g in _gradients(reference).values()])
    new = torch.cat([g.flatten() for g in _gradients(fast).values()])
    assert float((new - ref).norm() / ref.norm()) < 1e-5
    assert fast_parts["loss"] == pytest.approx(parts["loss"], rel=1e-6)


def test_worker_threads_give_bit_identical_gradients(cld):
    """Passes in two threads: same gradients, same BatchNorm statistics, dropout on (seeded per pass)."""
    results = []
    for workers in (1, 2):
        torch.manual_seed(0)
        model = PinTuningModel.for_dataset(cld, seed=0, encoder="gin_scratch",
                                           **{**TINY, "encoder_dropout": 0.1, "context_dropout": 0.1})
        model.model.train()
        dataset = DeviceDataset(cld)
        batches = [dataset.batch([e], None, model._frozen(cld)) for e in _episodes(cld)]
        _, states = meta_gradients(model.model, batches, model.regularizer, workers)
        for state in states:
            state.apply()
        results.append((_gradients(model.model), dict(model.model.named_buffers())))
    (grads_1, buffers_1), (grads_2, buffers_2) = results
    assert all(torch.equal(grads_1[n], grads_2[n]) for n in grads_1)
    assert all(torch.equal(buffers_1[n], buffers_2[n]) for n in buffers_1)


@pytest.mark.parametrize("gnn_type", ["gcn", "gin"])
def test_padded_batch_encoder_equals_pyg_batches(tox21, gnn_type):
    encoder = PretrainedGNN(gnn_type, num_layer=3, emb_dim=16, dropout=0.0).train()
    molecules = torch.as_tensor(np.arange(30).reshape(3, 10))   # 3 groups with different atom counts
    graphs = gather_graphs(DeviceDataset(tox21).graphs, molecules)
    assert len(set(graphs.atom_mask.sum(1).tolist())) == 3      # so two of them are padded
    batched = encode(encoder, ParamView(encoder, {}), "", graphs, PassState())
    for group in range(3):   # train mode: BatchNorm statistics per group, as one PyG batch per group
        expected = encoder.embed(collate_graphs([tox21.graphs[i] for i in molecules[group].tolist()]))
        assert torch.allclose(batched[group], expected, atol=1e-5), group


@pytest.mark.parametrize("gnn_type", ["gcn", "gin"])
def test_embed_molecules_equals_the_pyg_encoder_in_eval_mode(tox21, gnn_type):
    """The baselines' and the frozen cache's embedding path against ``PretrainedGNN.embed`` (its oracle)."""
    torch.manual_seed(0)
    encoder = PretrainedGNN(gnn_type, num_layer=3, emb_dim=16, dropout=0.5)
    for norm in encoder.batch_norms:        # running statistics and affine maps that are not the identity
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 2)
        norm.bias.data.uniform_(-1, 1)
    molecules = np.random.default_rng(0).permutation(len(tox21))[:23]   # out of order; chunks of 7 end unevenly
    with pytest.raises(ValueError, match="eval mode"):
        embed_molecules(encoder.train(), DeviceDataset(tox21).graphs, molecules)
    fast = embed_molecules(encoder.eval(), DeviceDataset(tox21).graphs, molecules, chunk=7)
    with torch.no_grad():
        expected = encoder.embed(collate_graphs([tox21.graphs[i] for i in molecules]))
    assert fast.shape == expected.shape and not fast.requires_grad
    assert torch.allclose(fast, expected, atol=1e-5), (fast - expected).abs().max()
    assert embed_molecules(encoder, DeviceDataset(tox21).graphs, []).shape == (0, 16)


@pytest.mark.parametrize("offset", [0, -1])
def test_dense_label_graph_equals_label_edges(cld, offset):
    episodes = _episodes(cld, n_tasks=2, per_task=1)
    batch = DeviceDataset(cld).batch(episodes, None, None, offset)
    for k, episode in enumerate(episodes):
        columns = np.concatenate([[episode.task_index], episode.aux_task_indices])
        support = torch.as_tensor(cld.labels[np.ix_(episode.support, columns)], dtype=torch.float32)
        query = torch.as_tensor(cld.labels[np.ix_(episode.query, episode.aux_task_indices)], dtype=torch.float32)
        edges = label_edges(support, query, offset)
        n = batch.labels.adjacency.shape[1]
        adjacency = torch.zeros(n, n)
        adjacency[edges.edge_index[1], edges.edge_index[0]] = 1.0
        counts = torch.zeros(n, 4)
        counts.index_put_((edges.edge_index[1], edges.edge_type), torch.ones(edges.edge_type.numel()), accumulate=True)
        assert torch.equal(batch.labels.adjacency[k], adjacency)
        assert torch.equal(batch.labels.type_counts[k], counts)


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_fast_evaluation_scores_equal_reference(cld, protocol):
    # kekulize=False: the shared fixture's molecules keep their aromatic bonds (kekulization is a data setting)
    model = PinTuningModel.for_dataset(cld, seed=0, protocol=protocol, encoder="gcn_scratch", eval_query_chunk=64,
                                       kekulize=False, **TINY)
    model.fit(cld, steps=1, seed=0, progress=False)
    episode = evaluation_episode(cld, cld.test_tasks[0], n_shot=5, seed=1)
    frozen = model._frozen(cld)
    # the official preset leaks BatchNorm statistics out of an evaluation: each path gets its own copy
    reference = predict_episode(copy.deepcopy(model.model), cld, episode, frozen, seed=1)
    fast = batched_predict_episode(model.model, DeviceDataset(cld), episode, frozen, seed=1, chunks_per_pass=2)
    assert len(episode.query) % 64 != 0   # a ragged last chunk is covered
    assert fast.shape == reference.shape and np.allclose(fast, reference, atol=1e-5)


def test_fit_follows_the_reference_trajectory(cld, float64):
    trained = []
    for fast in (False, True):
        model = PinTuningModel.for_dataset(cld, seed=0, encoder="gin_scratch", **TINY)
        model.fit(cld, steps=3, seed=0, progress=False, fast=fast)
        trained.append((model, [h["loss"] for h in model.history]))
    (reference, ref_losses), (fast, fast_losses) = trained
    assert fast_losses == pytest.approx(ref_losses, rel=1e-5)
    for (name, a), (_, b) in zip(reference.model.named_parameters(), fast.model.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    for (name, a), (_, b) in zip(reference.model.named_buffers(), fast.model.named_buffers()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_batch_step_on_gpu_equals_reference_on_cpu(cld):
    """The GPU layout (all episodes in one batch) against the CPU reference, float32."""
    # the reference stays on the CPU: on a GPU machine a model is built on the GPU unless told otherwise
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", device=torch.device("cpu"), **TINY)
    reference = model.model.train()
    gpu = copy.deepcopy(reference).cuda().train()
    episodes = _episodes(cld)
    frozen = model._frozen(cld)
    inputs = [(cld.task_index(e.task), episode_inputs(cld, e, None, frozen)) for e in episodes]
    meta_loss(reference, inputs, model.regularizer)[0].backward()
    regularizer = copy.deepcopy(model.regularizer).cuda()
    batch = DeviceDataset(cld, torch.device("cuda")).batch(episodes, None, frozen.cuda())
    _, states = meta_gradients(gpu, [batch], regularizer)
    for state in states:
        state.apply()
    ref = torch.cat([g.flatten() for g in _gradients(reference).values()])
    new = torch.cat([g.flatten().cpu() for g in _gradients(gpu).values()])
    assert float((new - ref).norm() / ref.norm()) < 1e-4


class _DeviceWaits(TorchDispatchMode):
    """Records the operators that make the host wait for a GPU (run on a CPU, where they are visible
    but cost nothing): scalar reads, data-dependent output sizes, coalescing; and the accumulating
    index writes that advanced indexing's sort-based backward consists of."""

    SYNCING = ("aten._local_scalar_dense", "aten.nonzero", "aten._coalesce", "aten.unique", "aten._unique",
               "aten.masked_select")

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name.startswith(self.SYNCING):
            self.found.append(name)
        elif name == "aten.repeat_interleave" and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.long \
                and kwargs.get("output_size", args[-1] if len(args) > 2 else None) is None:
            self.found.append(f"{name} without output_size")
        elif name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(i is not None and i.dtype == torch.bool for i in indices):
                self.found.append(f"{name} with a boolean mask")
            if name != "aten.index" and (args[3] if len(args) > 3 else kwargs.get("accumulate", False)):
                self.found.append(f"{name} accumulating (advanced-indexing backward)")
            if name != "aten.index" and args[2].dim() == 0:    # x[i] = 1.0: on a GPU, a blocking copy of the 1.0
                self.found.append(f"{name} of a scalar")
        return func(*args, **kwargs)


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_batch_and_step_never_wait_for_the_device(cld, protocol):
    """Building a batch and the whole outer step (inner step, outer loss, second-order backward) read
    nothing back from the device and use no sort-based index backward: the precondition for running
    the step asynchronously on a GPU (and for capturing it as a CUDA graph)."""
    model = PinTuningModel.for_dataset(cld, seed=0, protocol=protocol, encoder="gcn_scratch", **TINY)
    model.model.train()
    episodes, frozen = _episodes(cld), model._frozen(cld)
    dataset = DeviceDataset(cld)
    with _DeviceWaits() as waits:
        batch = dataset.batch(episodes, None, frozen, model.config.query_aux_offset, model.config.separate_bn_batches)
        meta_gradients(model.model, [batch], model.regularizer)
    assert waits.found == []
    with _DeviceWaits() as waits:   # the test sees what it looks for
        torch.arange(4).repeat_interleave(torch.tensor([1, 0, 2, 1]))
        (torch.ones(3, requires_grad=True)[torch.tensor([0, 0, 2])].sum()).backward()
        torch.tensor([1.0]).item()
        torch.zeros(3)[torch.tensor([0, 2])] = 1.0
    assert waits.found == ["aten.repeat_interleave without output_size",
                           "aten.index_put accumulating (advanced-indexing backward)", "aten._local_scalar_dense",
                           "aten.index_put_ of a scalar"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_step_runs_without_a_host_synchronisation(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", device=torch.device("cuda"), **TINY)
    model.model.train()
    episodes, frozen = _episodes(cld), model._frozen(cld)
    dataset = DeviceDataset(cld, torch.device("cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = dataset.batch(episodes, None, frozen)
        meta_gradients(model.model, [batch], model.regularizer)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_query_only_scoring_is_refused_where_molecules_are_coupled(cld):
    """Scoring the query alone equals the full pass only in eval mode: train mode (BatchNorm over the
    batch) and a batch without a query part are refused."""
    from deepchem_pintuning.batched_network import batched_forward
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    dataset, episodes = DeviceDataset(cld), _episodes(cld, n_tasks=1, per_task=1)
    with torch.no_grad():
        model.model.eval()
        batch = dataset.batch(episodes, None, model._frozen(cld), separate_parts=True)
        full, _ = batched_forward(model.model, {}, batch)
        query, _ = batched_forward(model.model, {}, batch, query_only=True)
        assert torch.allclose(query, full[:, batch.n_support:], atol=1e-6)
        with pytest.raises(ValueError, match="eval mode"):
            batched_forward(model.model, {}, dataset.batch(episodes, None, model._frozen(cld)), query_only=True)
        model.model.train()
        with pytest.raises(ValueError, match="eval mode"):
            batched_forward(model.model, {}, batch, query_only=True)


def test_flop_count_reaches_the_second_order_backward(cld):
    """profile_step.py counts a step's FLOPs with torch's dispatch-mode counter; the count it quotes
    includes the double backward (more FLOPs than the first-order step) and is reproducible."""
    from torch.utils.flop_counter import FlopCounterMode

    def step_flops(second_order):
        model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", second_order=second_order, **TINY)
        batch = DeviceDataset(cld).batch(_episodes(cld), None, model._frozen(cld), model.config.query_aux_offset,
                                         model.config.separate_bn_batches)
        with FlopCounterMode(display=False) as counter:
            meta_gradients(model.model, [batch], model.regularizer)
        return counter.get_total_flops()

    second = step_flops(True)
    assert second == step_flops(True)
    assert second > 1.2 * step_flops(False) > 0
