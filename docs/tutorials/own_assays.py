# %% [markdown]
# # Meta-training Pin-Tuning on your own assays
#
# `pintuning train` meta-trains on the named benchmarks (Tox21, SIDER, MUV, ToxCast, PCBA). A
# table of your own assays goes through Python: featurize it with DeepChem's `CSVLoader`, choose
# which assays to hold out, wrap it in a {class}`~deepchem_pintuning.data.FewShotDataset` and fit
# as usual. The saved model then scores new assays from the command line (`pintuning predict`).
#
# The table needs one SMILES column and one column per assay with 1 (active), 0 (inactive) or an
# empty cell (not measured; never read as inactive). Here the 19 ToxCast CLD assays shipped with
# the project (305 molecules) stand in for yours.
#
# Run it with `python docs/tutorials/own_assays.py` (writes into the current folder; the shipped
# GCN and 100 outer steps took 14 minutes on 2 CPU cores shared with other jobs);
# `TUTORIAL_BUDGET=tiny` runs it in seconds with a small untrained network (the test suite does).

# %%
import logging
import os
from pathlib import Path

import pandas as pd
from rdkit import RDLogger

import deepchem_pintuning as pt
import deepchem as dc
from deepchem_pintuning.cli import main as pintuning
from deepchem_pintuning.data import project_data_dir
from deepchem_pintuning.plotting import roc_pr_curves

TINY = os.environ.get("TUTORIAL_BUDGET") == "tiny"
OUT = Path("own_assays_tutorial")
OUT.mkdir(exist_ok=True)

# %% [markdown]
# ## 1. The table

# %%
table = pd.read_csv(project_data_dir() / "fewshot_gsmeta" / "toxcast-CLD" / "toxcast-CLD.csv.gz")
table.to_csv(OUT / "my_assays.csv", index=False)      # your file: smiles + one 0/1 column per assay
assays = [column for column in table.columns if column != "smiles"]
print(f"{len(table)} molecules x {len(assays)} assays")

# %% [markdown]
# ## 2. Featurize and split the assays
#
# {class}`~deepchem_pintuning.featurizer.PretrainGNNFeaturizer` gives the integer atom and bond
# indices the pre-trained encoders were trained with. Molecules RDKit cannot parse are dropped by
# the loader. An assay takes part in K-shot episodes only with more than K actives and more than
# K inactives; the rest are left out.

# %%
logging.getLogger("deepchem.feat.base_classes").setLevel(logging.ERROR)  # no traceback per unparsable SMILES
RDLogger.DisableLog("rdApp.error")                                      # nor RDKit's parse errors

n_shot = 5
loader = dc.data.CSVLoader(tasks=assays, feature_field="smiles", featurizer=pt.PretrainGNNFeaturizer())
dataset = loader.create_dataset(str(OUT / "my_assays.csv"), data_dir=str(OUT / "featurized"))
print(f"{len(dataset)} of {len(table)} molecules featurized")
labels = pd.DataFrame(dataset.y, columns=assays).where(dataset.w > 0)
usable = [a for a in assays if (labels[a] == 1).sum() > n_shot and (labels[a] == 0).sum() > n_shot]
print(f"{len(usable)} of {len(assays)} assays have more than {n_shot} actives and inactives")

# %% [markdown]
# Hold out a few assays as meta-test assays: the model never trains on them, so their scores say
# how well it adapts to an assay it has not seen. The remaining assays are meta-training assays
# (and each other's auxiliary properties in the context graph).

# %%
test_assays = usable[-4:]
data = pt.FewShotDataset("my_assays", dataset, tasks=assays,
                         train_tasks=[a for a in usable if a not in test_assays], test_tasks=test_assays)
data.summary()

# %% [markdown]
# ## 3. Meta-train and evaluate

# %%
settings = dict(n_shot=n_shot, encoder="gcn_supervised_contextpred")
if TINY:
    settings.update(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder="gcn_scratch")
model = dc.models.PinTuningModel.for_dataset(data, model_dir=str(OUT / "model"), seed=0, **settings)
model.fit(data, steps=2 if TINY else 100, progress=not TINY)
result = model.evaluate_fewshot(data, seed=0, return_scores=True)
print(f"mean ROC-AUC over the {len(test_assays)} held-out assays: {result['roc_auc']:.3f}")
roc_pr_curves(result, title="held-out assays").savefig(OUT / "roc_pr.png")

# %% [markdown]
# `fit` saved the model in `own_assays_tutorial/model` with a model card naming your assays; a
# later session reloads it with `dc.models.PinTuningModel.load("own_assays_tutorial/model")`.
# (`pintuning plot` draws its figures for the named benchmarks only; for your own table call the
# functions of {mod}`deepchem_pintuning.plotting` as above.)
#
# ## 4. Score a new assay from the command line
#
# Ten actives and ten inactives of a new assay (here: a held-out one) go into a CSV with `smiles`
# and `label` columns; the library is any CSV with a `smiles` column, or an SDF file. The cell
# below runs exactly
#
# ```
# pintuning predict --model-dir own_assays_tutorial/model --support own_assays_tutorial/support.csv \
#     --library own_assays_tutorial/library.csv --out own_assays_tutorial/scores.csv
# ```

# %%
episode = pt.evaluation_episodes(data, n_shot=n_shot, seed=0, tasks=[test_assays[0]])[0]
pd.DataFrame({"smiles": [data.smiles[i] for i in episode.support],
              "label": episode.support_labels.astype(int)}).to_csv(OUT / "support.csv", index=False)
pd.DataFrame({"smiles": [data.smiles[i] for i in episode.query]}).to_csv(OUT / "library.csv", index=False)
status = pintuning(["predict", "--model-dir", str(OUT / "model"), "--support", str(OUT / "support.csv"),
                    "--library", str(OUT / "library.csv"), "--out", str(OUT / "scores.csv"), "--quiet"])
scores = pd.read_csv(OUT / "scores.csv")
print(f"exit status {status}; ROC-AUC of the scores against the measured {test_assays[0]} labels: "
      f"{dc.metrics.roc_auc_score(episode.query_labels, scores['score']):.3f}")
scores.sort_values("score", ascending=False).head()
