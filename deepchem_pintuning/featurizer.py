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

import numpy as np
from deepchem.feat import MolecularFeaturizer
from deepchem.feat.graph_data import GraphData
from rdkit import Chem, rdBase

NUM_ATOM_TYPES = 120
NUM_CHIRALITY_TAGS = 3
NUM_BOND_TYPES = 6
NUM_BOND_DIRECTIONS = 3
SELF_LOOP_BOND_TYPE = 4
MASK_ATOM_TYPE = 119
MASK_BOND_TYPE = 5
MAX_ATOMIC_NUMBER = 118

CHIRALITY_INDEX = {
    Chem.rdchem.ChiralType.CHI_UNSPECIFIED: 0,
    Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
    Chem.rdchem.ChiralType.CHI_TETRAHEDRAL_CCW: 2,
}
BOND_TYPE_INDEX = {
    Chem.rdchem.BondType.SINGLE: 0,
    Chem.rdchem.BondType.DOUBLE: 1,
    Chem.rdchem.BondType.TRIPLE: 2,
    Chem.rdchem.BondType.AROMATIC: 3,
}
BOND_DIRECTION_INDEX = {
    Chem.rdchem.BondDir.NONE: 0,
    Chem.rdchem.BondDir.ENDUPRIGHT: 1,
    Chem.rdchem.BondDir.ENDDOWNRIGHT: 2,
}


class UnsupportedMoleculeError(ValueError):
    """A molecule has an atom or bond that the pretrain-gnns embedding tables cannot represent."""


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
        mol = datapoint
        if self.kekulize:  # on a copy: the caller's molecule keeps its aromatic bonds
            mol = Chem.Mol(datapoint)
            Chem.Kekulize(mol)
        atoms = [(atom.GetAtomicNum(), atom.GetChiralTag()) for atom in mol.GetAtoms()]
        for index, (z, tag) in enumerate(atoms):
            if not 1 <= z <= MAX_ATOMIC_NUMBER:
                raise UnsupportedMoleculeError(
                    f"{Chem.MolToSmiles(datapoint)}: atom {index} has atomic number {z}; the embedding "
                    f"table covers 1..{MAX_ATOMIC_NUMBER} (dummy atoms '*' are not allowed)")
            if tag not in CHIRALITY_INDEX:
                raise UnsupportedMoleculeError(
                    f"{Chem.MolToSmiles(datapoint)}: atom {index} ({mol.GetAtomWithIdx(index).GetSymbol()}) has "
                    f"chiral tag {tag}; the pretrain-gnns chirality table only has UNSPECIFIED, TETRAHEDRAL_CW "
                    "and TETRAHEDRAL_CCW")
        node_features = np.array([(z - 1, CHIRALITY_INDEX[tag]) for z, tag in atoms], dtype=np.int64).reshape(-1, 2)

        bonds = [(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond.GetBondType(), bond.GetBondDir())
                 for bond in mol.GetBonds()]
        for index, (_, _, btype, bdir) in enumerate(bonds):
            if btype not in BOND_TYPE_INDEX:
                raise UnsupportedMoleculeError(
                    f"{Chem.MolToSmiles(datapoint)}: bond {index} has type {btype}; supported: "
                    "SINGLE, DOUBLE, TRIPLE, AROMATIC")
            if bdir not in BOND_DIRECTION_INDEX:
                raise UnsupportedMoleculeError(
                    f"{Chem.MolToSmiles(datapoint)}: bond {index} has direction {bdir}; supported: "
                    "NONE, ENDUPRIGHT, ENDDOWNRIGHT")
        # every bond in both directions: (i -> j, j -> i) per bond, with the same features
        ends = np.array([(i, j) for i, j, _, _ in bonds], dtype=np.int64).reshape(-1, 2)
        edge_index = np.stack([ends, ends[:, ::-1]], axis=1).reshape(-1, 2).T.copy()
        features = np.array([(BOND_TYPE_INDEX[t], BOND_DIRECTION_INDEX[d]) for _, _, t, d in bonds],
                            dtype=np.int64).reshape(-1, 2)
        return GraphData(node_features=node_features, edge_index=edge_index,
                         edge_features=np.repeat(features, 2, axis=0))

    def featurize_one(self, smiles: str) -> Tuple[Optional[GraphData], Optional[str]]:
        """Parse ``smiles`` once: ``(graph, None)``, or ``(None, why it cannot be featurized)``.

        Examples
        --------
        >>> graph, reason = PretrainGNNFeaturizer().featurize_one("CCO")
        >>> graph.node_features.shape, reason
        ((3, 2), None)
        """
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None, "RDKit could not parse the SMILES"
        try:
            return self._featurize(mol), None
        except UnsupportedMoleculeError as error:
            return None, str(error)

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

