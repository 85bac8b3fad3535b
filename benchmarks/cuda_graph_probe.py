"""Can one fast-path outer step be captured as a CUDA graph, and how fast does it replay? (GPU only.)

Tox21 10-shot, paper preset, shipped GCN, one batch of 10 episodes, dropout off: a captured graph
replays the random draws of its capture unless each generator is registered with it, which the
product path would have to do; the probe measures what capture buys before that work is done.
It captures :func:`~deepchem_pintuning.batched_meta_training.meta_gradients` (inner step, outer
loss, second-order backward) on a fixed batch, replays it, and records the seconds per step eager
and replayed and the relative difference of the replayed gradients from the eager ones. A capture
that fails is recorded with its error (what still stops capture), not raised.

Two variants, so that one GPU session answers both questions:

* ``sparse``: the product path as it is (``SparseOperator`` products through cuSPARSE);
* ``dense``: the same operators stored as dense matrices (plain matrix products; whole-batch
  matrices, so slower per step than per-episode blocks would be), in case sparse products are
  what stops capture.

::

    python benchmarks/cuda_graph_probe.py benchmarks/results/cuda_graph_probe.json   # gpu_session.sh
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def store_dense(operator_class) -> None:
    """Make every ``SparseOperator`` built from now on keep its matrices dense (probe only)."""
    build = operator_class.__init__

    def dense_init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.matrix, self.transpose_matrix = self.matrix.to_dense(), self.transpose_matrix.to_dense()

    operator_class.__init__ = dense_init


def probe(model, data, steps: int) -> dict:
    """Eager vs captured-and-replayed outer step on a fixed batch of ``model``'s training episodes."""
    from deepchem_pintuning.batched_meta_training import meta_gradients
    from deepchem_pintuning.episodes import EpisodeSampler
    from deepchem_pintuning.grouped_ops import PassState

    config = model.config
    sampler = EpisodeSampler(data, config.n_shot, config.n_query, seed=1)
    episodes = [sampler.sample(task) for task in data.train_tasks[:config.tasks_per_step]
                for _ in range(config.episodes_per_task)]
    batch = model._on_device(data).batch(episodes, None, model._frozen(data), config.query_aux_offset,
                                         config.separate_bn_batches)
    params = model.model.trainable_parameters()

    def step() -> torch.Tensor:
        for p in params.values():
            p.grad = None
        # dropout is off, so the pass needs no generator (a fresh one per pass cannot be seeded in a capture)
        return meta_gradients(model.model, [batch], model.regularizer, states=[PassState()])[0]["loss"]

    def seconds_per_step(run) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    result = {"episodes": len(episodes)}
    try:
        step()
    except Exception as error:  # noqa: BLE001 - the probe's answer is the error
        return {**result, "eager_error": f"{type(error).__name__}: {error}"[:3000]}
    eager_grads = {name: p.grad.clone() for name, p in params.items() if p.grad is not None}
    result["eager_seconds_per_step"] = seconds_per_step(step)
    side = torch.cuda.Stream()                 # warm-up on a side stream, as capture requires
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except Exception as error:  # noqa: BLE001
        return {**result, "captured": False, "capture_error": f"{type(error).__name__}: {error}"[:3000]}
    result["captured"] = True
    result["replay_seconds_per_step"] = seconds_per_step(graph.replay)
    replayed = torch.cat([params[name].grad.flatten() for name in eager_grads])
    reference = torch.cat([g.flatten() for g in eager_grads.values()])
    result["replay_vs_eager_relative_gradient_difference"] = float((replayed - reference).norm() / reference.norm())
    result["speed_up"] = result["eager_seconds_per_step"] / result["replay_seconds_per_step"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="JSON to write")
    parser.add_argument("--steps", type=int, default=20, help="timed steps, eager and replayed")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("CUDA is not available on this machine")
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.model import PinTuningModel
    from deepchem_pintuning.pintuning import published_hyperparameters
    from deepchem_pintuning.sparse_products import SparseOperator

    data = load_fewshot("tox21", progress=False)
    model = PinTuningModel.for_dataset(data, seed=0, device=torch.device("cuda"), encoder_dropout=0.0,
                                       context_dropout=0.0, **published_hyperparameters("tox21", 10))
    model.fit(data, steps=1, seed=0, progress=False)     # builds the model, the caches and the dataset on the GPU
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps_timed": args.steps,
              "sparse": probe(model, data, args.steps)}
    store_dense(SparseOperator)
    result["dense"] = probe(model, data, args.steps)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
