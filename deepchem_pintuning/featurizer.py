"""Molecule featurizer that is index-compatible with the Hu et al. pretrain-gnns embeddings.

The pre-trained encoders of Hu et al. (ICLR 2020, "Strategies for Pre-training Graph Neural
Networks") embed every atom with two integer indices and every bond with two integer indices:

=========  ========================================================  ==========
feature    index                                                     table rows
=========  ========================================================  ==========
atom type  atomic number - 1 (H = 0, C = 5, ... , Og = 117)          120 (118 = unused, 119 = mask token)
chirality  UNSPECIFIED = 0, TETRAHEDRAL_CW = 1, TETRAHEDRAL_CCW = 2  3
bond type  SINGLE = 0, DOUBLE = 1, TRIPLE = 2, AROMATIC = 3          6 (4 = self loop, 5 = mask token)
bond dir   NONE = 0, ENDUPRIGHT = 1, ENDDOWNRIGHT = 2                3
=========  ========================================================  ==========

DeepChem's :class:`deepchem.feat.SNAPFeaturizer` reserves index 0 as a mask token for atoms and
bonds, so its indices are shifted by one row against the published weight files. This featurizer
produces the original indices. Anything outside the tables (chirality ``CHI_OTHER`` or the newer
RDKit tags such as ``CHI_TETRAHEDRAL``/``CHI_ALLENE``, dative or other exotic bonds, wedge bond
directions) raises :class:`UnsupportedMoleculeError` naming the molecule and the offending atom or
bond instead of silently using a wrong row.
"""
from __future__ import annotations

from typing import Optional, Tuple

from deepchem.feat import MolecularFeaturizer
from deepchem.feat.graph_data import GraphData
from rdkit import Chem

from deepchem_pintuning.molecule_graph import (GraphArrays, UnsupportedMoleculeError, graph_arrays,
                                               smiles_graph_arrays)

__all__ = ["PretrainGNNFeaturizer", "UnsupportedMoleculeError"]


class PretrainGNNFeaturizer(MolecularFeaturizer):
    """Featurize molecules into the 2+2 integer graphs of Hu et al. pretrain-gnns.

    Each molecule becomes a :class:`deepchem.feat.GraphData` with integer ``node_features`` of
    shape ``[n_atoms, 2]`` (atom type, chirality), ``edge_index`` of shape ``[2, 2 * n_bonds]``
    (every bond in both directions) and integer ``edge_features`` of shape ``[2 * n_bonds, 2]``
    (bond type, bond direction). Self loops are not stored; the encoder adds them.

    Parameters
    ----------
    kekulize: bool, default False
        Kekulize each molecule before reading bond types, so aromatic bonds become single or double.
        The official Pin-Tuning/GS-Meta code does this; pretrain-gnns pre-training did not (it used
        the AROMATIC row), so the default keeps aromatic bonds.

    Examples
    --------
    >>> featurizer = PretrainGNNFeaturizer()
    >>> graph = featurizer.featurize(["C(=O)O"])[0]
    >>> sorted(graph.node_features.tolist())  # C, O, O: atomic number - 1, no chirality
    [[5, 0], [7, 0], [7, 0]]
    >>> graph.edge_index.shape
    (2, 4)
    """

    #: Bumped whenever the produced indices change, so cached featurizations are not reused.
    FORMAT_VERSION = 1

    def __init__(self, kekulize: bool = False):
        super().__init__()
        self.kekulize = kekulize

    def __str__(self) -> str:
        # DeepChem names cache folders after str(featurizer); include the format version.
        return f"{super().__str__()}_v{self.FORMAT_VERSION}"

    def _featurize(self, datapoint: Chem.Mol, **kwargs) -> GraphData:
        if datapoint is None:
            raise UnsupportedMoleculeError("RDKit could not parse the molecule")
        return _graph_data(graph_arrays(datapoint, self.kekulize))

    def featurize_one(self, smiles: str) -> Tuple[Optional[GraphData], Optional[str]]:
        """Parse ``smiles`` once: ``(graph, None)``, or ``(None, why it cannot be featurized)``.

        Examples
        --------
        >>> graph, reason = PretrainGNNFeaturizer().featurize_one("CCO")
        >>> graph.node_features.shape, reason
        ((3, 2), None)
        >>> PretrainGNNFeaturizer().featurize_one("")
        (None, 'empty SMILES')
        """
        arrays, reason = smiles_graph_arrays(smiles, self.kekulize)
        return (None, reason) if arrays is None else (_graph_data(arrays), None)

    def explain_failure(self, smiles: str) -> Optional[str]:
        """Return why ``smiles`` cannot be featurized, or None when it can.

        Examples
        --------
        >>> PretrainGNNFeaturizer().explain_failure("C1CC")
        'RDKit could not parse the SMILES'
        >>> PretrainGNNFeaturizer().explain_failure("CCO") is None
        True
        """
        return self.featurize_one(smiles)[1]


def _graph_data(arrays: GraphArrays) -> GraphData:
    node_features, edge_index, edge_features = arrays
    return GraphData(node_features=node_features, edge_index=edge_index, edge_features=edge_features)
