# %% [markdown]
# # Few-shot toxicity with Pin-Tuning
#
# A new toxicity assay rarely comes with more than a handful of measured molecules. Pin-Tuning
# (Wang et al., NeurIPS 2024) meta-trains a pre-trained molecular GNN on many assays so that it
# adapts to a new one from 10 actives and 10 inactives. In this tutorial you
#
# 1. load Tox21 as a few-shot benchmark and look at its episodes,
# 2. meta-train `dc.models.PinTuningModel` on the 9 training assays,
# 3. evaluate it on the 3 held-out assays under the honest and the deployment protocols,
# 4. score a library for "your own" assay from 10 + 10 labelled molecules,
# 5. plot ROC curves and the molecules' embeddings before and after adaptation.
#
# This page is a [jupytext](https://jupytext.readthedocs.io) script: run it with
# `python docs/tutorials/pintuning_tox21.py` (it writes into the current folder), or open it as a
# notebook with `jupytext --to notebook docs/tutorials/pintuning_tox21.py`. The full budget
# (the shipped pre-trained GCN, 200 outer steps) took 28 minutes on 2 CPU cores shared with other
# jobs; `TUTORIAL_BUDGET=tiny` runs every cell in seconds with a small untrained network and 2 outer
# steps (what the test suite does), so its numbers are close to chance.

# %%
import os
from pathlib import Path

import numpy as np
import pandas as pd

import deepchem_pintuning as pt                 # registers dc.models.PinTuningModel (import it before deepchem
import deepchem as dc                           # and DeepChem's notices about optional packages stay quiet)
from deepchem_pintuning.pintuning import published_hyperparameters
from deepchem_pintuning.plotting import adaptation_embeddings, embedding_view, learning_curve, roc_pr_curves

TINY = os.environ.get("TUTORIAL_BUDGET") == "tiny"
OUT = Path("pintuning_tutorial")
OUT.mkdir(exist_ok=True)

# %% [markdown]
# ## 1. Tox21 as a few-shot benchmark
#
# {func}`~deepchem_pintuning.data.load_fewshot` reads the shipped MoleculeNet file with DeepChem's
# loader, featurizes every molecule for the pre-trained encoder (cached after the first call) and
# attaches the published property split: 9 meta-training and 3 meta-test assays. Missing labels
# stay missing (NaN); they are never counted as inactive.

# %%
data = pt.load_fewshot("tox21")
print(f"{len(data)} molecules, {len(data.skipped)} could not be featurized")
print("meta-training:", data.train_tasks)
print("meta-test:    ", data.test_tasks)
data.summary()

# %% [markdown]
# ## 2. Episodes
#
# Meta-training draws *episodes*: for one training assay, a support set of K actives + K inactives
# and a small query set the model must classify after adapting to the support. The other training
# assays are the episode's auxiliary properties: their labels connect molecules to property nodes
# in Pin-Tuning's context graph (see {doc}`../concepts/episodes`).

# %%
sampler = pt.EpisodeSampler(data, n_shot=10, seed=0)
episode = sampler.sample()
print(f"target {episode.task}: support {len(episode.support)} molecules "
      f"({int(episode.support_labels.sum())} active), query {len(episode.query)}, "
      f"{len(episode.aux_task_indices)} auxiliary properties")

# %% [markdown]
# Evaluation uses fixed episodes: for a seed and a meta-test assay the support set is always the
# same 10 + 10 molecules and every other labelled molecule is a query, so every method scored with
# that seed sees the same data.

# %%
for fixed in pt.evaluation_episodes(data, n_shot=10, seed=0):
    print(f"{fixed.task:8s} support {len(fixed.support)}  query {len(fixed.query)} "
          f"({fixed.query_labels.mean():.1%} active)")

# %% [markdown]
# ## 3. Meta-training
#
# The model is built for the dataset's properties; the published Tox21 10-shot settings are
# meta learning rate 1e-4, inner learning rate 0.05 and Emb-BWC weight 0.1. Only the MP-Adapters,
# the context encoder, the classifier, the property embeddings and the encoder's embedding tables
# are tuned; the pre-trained message-passing weights stay frozen.

# %%
settings = published_hyperparameters("tox21", n_shot=10)
if TINY:
    settings.update(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder="gcn_scratch")
model = dc.models.PinTuningModel.for_dataset(data, model_dir=str(OUT / "model"), seed=0, **settings)
summary = model.parameter_summary()
print(f"{summary['trainable']:,} tuned and {summary['frozen']:,} frozen parameters")

# %% [markdown]
# `fit` meta-trains for `steps` outer steps (the paper uses 2,000); `eval_every` scores the
# meta-test assays during training, which is what the learning curve shows. The model directory
# gets a checkpoint, the settings and `training_history.csv`.

# %%
steps = 2 if TINY else 200
loss = model.fit(data, steps=steps, eval_every=steps // 2, eval_tasks=data.test_tasks[:1] if TINY else None,
                 progress=not TINY)
print(f"mean meta-training loss {loss:.3f}")
learning_curve(OUT / "model" / "training_history.csv", title="Tox21 10-shot").savefig(OUT / "learning_curve.png")

# %% [markdown]
# ## 4. Two evaluation protocols
#
# Both score the final model on the fixed supports of seed 0:
#
# * **honest** (`protocol="paper"`, the published setting without picking the best of many
#   evaluations): query molecules share context graphs in chunks and keep their labels on the 9
#   training assays as auxiliary edges.
# * **deployment** (`protocol="deployment"`): what a user's library has: no auxiliary labels,
#   every molecule scored on a context graph of its own.
#
# The gap between the two is what the auxiliary labels are worth ({doc}`../concepts/protocols`).

# %%
honest = model.evaluate_fewshot(data, seed=0, return_scores=True)
deployment = model.evaluate_fewshot(data, seed=0, protocol="deployment")
pd.DataFrame({"honest": {t: s["roc_auc"] for t, s in honest["per_task"].items()},
              "deployment": {t: s["roc_auc"] for t, s in deployment["per_task"].items()}}).round(3)

# %% [markdown]
# ## 5. Your own assay from 10 + 10 molecules
#
# Here the support set of SR-p53 for seed 1 plays the role of your measurements. The model adapts
# to them once ({meth}`~deepchem_pintuning.assay_scoring.AssayScoring.adapt_to_assay`) and then
# scores any SMILES ({meth}`~deepchem_pintuning.assay_scoring.AssayScoring.score_smiles`), each
# molecule on its own, so a score does not depend on the rest of the library; a SMILES that cannot
# be featurized gets NaN and a reason. The same is available from the command line as
# `pintuning predict --model-dir ... --support my_assay.csv --library library.csv --out scores.csv`.

# %%
mine = pt.evaluation_episodes(data, n_shot=10, seed=1, tasks=["SR-p53"])[0]
support_smiles = [data.smiles[i] for i in mine.support]
library = [data.smiles[i] for i in mine.query[:500]] + ["not a molecule"]
adapted = model.adapt_to_assay(support_smiles, mine.support_labels, seed=0)
scores, reasons = model.score_smiles(adapted, library)
ranked = pd.DataFrame({"smiles": library, "score": scores, "reason": reasons}).sort_values("score", ascending=False)
ranked.to_csv(OUT / "scores.csv", index=False)
known = dc.metrics.roc_auc_score(mine.query_labels[:500], scores[:500])
print(f"ROC-AUC of the ranking against the measured SR-p53 labels: {known:.3f}")
ranked.head(10)

# %% [markdown]
# ## 6. Plots
#
# ROC and precision-recall curves of the honest evaluation, one curve per meta-test assay:

# %%
roc_pr_curves(honest, title="Tox21 10-shot").savefig(OUT / "roc_pr.png")

# %% [markdown]
# And what the adaptation does to the molecules: the query molecules of one assay projected to
# 2-D (PCA) from the pre-trained encoder's vectors and from the adapted encoder's vectors,
# coloured by their measured label ({func}`~deepchem_pintuning.plotting.adaptation_embeddings`).

# %%
embeddings = adaptation_embeddings(model, data, "SR-p53", seed=0, per_class=25 if TINY else 150)
embedding_view(embeddings, title="SR-p53 query molecules").savefig(OUT / "embeddings.png")
print(np.bincount(embeddings["labels"].astype(int)), "inactive / active molecules shown")

# %% [markdown]
# The same three figures for any saved model: `pintuning plot --model-dir pintuning_tutorial/model
# --out-dir plots`. Next: {doc}`own_assays` trains the model on your own multi-assay table.
