"""The featurizer must produce the row indices of the Hu et al. pretrain-gnns embedding tables."""
import numpy as np
import pytest
import torch
from rdkit import Chem

from deepchem_pintuning.episode_batch import PackedGraphs
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer, UnsupportedMoleculeError
from deepchem_pintuning.molecule_graph import FeaturizerProcess
from deepchem_pintuning.user_assay import featurize_ahead, featurize_library


def featurize(smiles, **kwargs):
    return PretrainGNNFeaturizer(**kwargs)._featurize(Chem.MolFromSmiles(smiles))


def test_atom_indices_are_atomic_number_minus_one():
    graph = featurize("[H][H]")  # explicit hydrogens stay atoms
    assert graph.node_features.tolist() == [[0, 0], [0, 0]]
    graph = featurize("ClC(Br)I")
    assert sorted(graph.node_features[:, 0].tolist()) == sorted([16, 5, 34, 52])


def test_chirality_indices():
    cw = featurize("F[C@@H](Cl)Br")
    ccw = featurize("F[C@H](Cl)Br")
    tags = {Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CW: 1, Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CCW: 2}
    for smiles, graph in (("F[C@@H](Cl)Br", cw), ("F[C@H](Cl)Br", ccw)):
        mol = Chem.MolFromSmiles(smiles)
        carbon = [a for a in mol.GetAtoms() if a.GetSymbol() == "C"][0]
        assert graph.node_features[carbon.GetIdx(), 1] == tags[carbon.GetChiralTag()]
    assert cw.node_features[:, 1].max() != ccw.node_features[:, 1].max()


def test_bond_types_and_directions():
    graph = featurize("C=CC#N")
    # bonds in both directions, identical features
    assert graph.edge_index.shape == (2, 6)
    assert sorted(graph.edge_features[:, 0].tolist()) == [0, 0, 1, 1, 2, 2]
    aromatic = featurize("c1ccccc1")
    assert set(aromatic.edge_features[:, 0].tolist()) == {3}
    kekule = featurize("c1ccccc1", kekulize=True)
    assert set(kekule.edge_features[:, 0].tolist()) == {0, 1}
    assert sorted(featurize("F/C=C/F").edge_features[:, 1].tolist()) == [0, 0, 1, 1, 1, 1]
    assert sorted(featurize("F/C=C\\F").edge_features[:, 1].tolist()) == [0, 0, 1, 1, 2, 2]


def test_not_shifted_like_snap_featurizer():
    from deepchem.feat import SNAPFeaturizer
    ours = featurize("CCO")
    snap = SNAPFeaturizer().featurize(["CCO"])[0]
    assert np.array_equal(np.sort(ours.node_features[:, 0]) + 1, np.sort(snap.node_features[:, 0]))


@pytest.mark.parametrize("smiles, needle", [
    ("[*]CC", "atomic number 0"),
    ("C[N]->[Fe]", "type DATIVE"),
])
def test_unsupported_molecules_raise(smiles, needle):
    mol = Chem.MolFromSmiles(smiles)
    with pytest.raises(UnsupportedMoleculeError, match=needle):
        PretrainGNNFeaturizer()._featurize(mol)


def test_newer_chiral_tags_rejected():
    mol = Chem.MolFromSmiles("C[C@H](N)O")
    mol.GetAtomWithIdx(1).SetChiralTag(Chem.rdchem.ChiralType.CHI_OTHER)
    with pytest.raises(UnsupportedMoleculeError, match="chiral tag CHI_OTHER"):
        PretrainGNNFeaturizer()._featurize(mol)


def test_explain_failure():
    featurizer = PretrainGNNFeaturizer()
    assert featurizer.explain_failure("not a smiles") == "RDKit could not parse the SMILES"
    assert "atomic number 0" in featurizer.explain_failure("*C")
    assert featurizer.explain_failure("c1ccccc1O") is None


def test_cache_name_carries_options_and_version():
    assert str(PretrainGNNFeaturizer()) != str(PretrainGNNFeaturizer(kekulize=True))
    assert str(PretrainGNNFeaturizer()).endswith(f"_v{PretrainGNNFeaturizer.FORMAT_VERSION}")


@pytest.mark.parametrize("kekulize", [False, True])
def test_featurize_ahead_gives_the_in_process_graphs(cld, kekulize):
    """The worker process, the in-process library featurization and the DeepChem featurizer agree."""
    smiles = list(cld.smiles[:150]) + ["", "C1CC", "*C", cld.smiles[3], "[Na+].[Cl-]"]
    chunks = [(k, smiles[k:k + 40]) for k in range(0, len(smiles), 40)]
    for (k, chunk), (payload, ahead) in zip(chunks, featurize_ahead(chunks, kekulize), strict=True):
        here = featurize_library(chunk, kekulize)
        assert payload == k and ahead.reasons == here.reasons
        assert np.array_equal(ahead.featurized, here.featurized)
        assert np.array_equal(ahead.distinct_index, here.distinct_index)
        graphs = [PretrainGNNFeaturizer(kekulize).featurize_one(s)[0] for s in dict.fromkeys(chunk)]
        reference = PackedGraphs([g for g in graphs if g is not None])
        for name in ("n_atoms", "n_bonds", "atoms", "bonds", "bond_features"):
            assert torch.equal(getattr(ahead.graphs, name), getattr(here.graphs, name)), name
            assert torch.equal(getattr(ahead.graphs, name), getattr(reference, name)), name
    assert "atomic number 0" in featurize_library(["*C"]).reasons[0]


def test_featurizer_process_failures_are_errors():
    with FeaturizerProcess() as process:
        process.request([5])                     # not a string: fails inside the process
        with pytest.raises(RuntimeError, match="process failed: TypeError"):
            process.result()
        process.request(["CCO"])                 # and the process goes on
        assert process.result().reasons == [""]
        process._process.kill()
        process._process.wait()
        with pytest.raises(RuntimeError, match="ended"):
            process.request(["CCO"])
