"""Molecule featurizer that is index-compatible with the Hu et al. pretrain-gnns embeddings.

The pre-trained encoders of Hu et al. (ICLR 2020, "Strategies for Pre-training Graph Neural
Networks") embed every atom with two integer indices and every bond with two integer indices:

=========  ======================================================  ==========
feature    index                                                    table rows
=========  ======================================================  ==========
atom type  atomic number - 1 (H = 0, C = 5, ... , Og = 117)         120 (118 = unused, 119 = mask token)
chirality  UNSPECIFIED = 0, TETRAHEDRAL_CW = 1, TETRAHEDRAL_CCW = 2  3
bond type  SINGLE = 0, DOUBLE = 1, TRIPLE = 2, AROMATIC = 3         6 (4 = self loop, 5 = mask token)
bond dir   NONE = 0, ENDUPRIGHT = 1, ENDDOWNRIGHT = 2                3
=========  ======================================================  ==========

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
        mol = Chem.Mol(datapoint)
        if self.kekulize:
            Chem.Kekulize(mol)
        name = Chem.MolToSmiles(datapoint)
        atoms = np.zeros((mol.GetNumAtoms(), 2), dtype=np.int64)
        for atom in mol.GetAtoms():
            z = atom.GetAtomicNum()
            if not 1 <= z <= MAX_ATOMIC_NUMBER:
                raise UnsupportedMoleculeError(
                    f"{name}: atom {atom.GetIdx()} has atomic number {z}; the embedding "
                    f"table covers 1..{MAX_ATOMIC_NUMBER} (dummy atoms '*' are not allowed)")
            tag = atom.GetChiralTag()
            if tag not in CHIRALITY_INDEX:
                raise UnsupportedMoleculeError(
                    f"{name}: atom {atom.GetIdx()} ({atom.GetSymbol()}) has chiral tag {tag}; "
                    "the pretrain-gnns chirality table only has UNSPECIFIED, TETRAHEDRAL_CW "
                    "and TETRAHEDRAL_CCW")
            atoms[atom.GetIdx()] = (z - 1, CHIRALITY_INDEX[tag])

        src, dst, feats = [], [], []
        for bond in mol.GetBonds():
            btype, bdir = bond.GetBondType(), bond.GetBondDir()
            if btype not in BOND_TYPE_INDEX:
                raise UnsupportedMoleculeError(
                    f"{name}: bond {bond.GetIdx()} has type {btype}; supported: "
                    "SINGLE, DOUBLE, TRIPLE, AROMATIC")
            if bdir not in BOND_DIRECTION_INDEX:
                raise UnsupportedMoleculeError(
                    f"{name}: bond {bond.GetIdx()} has direction {bdir}; supported: "
                    "NONE, ENDUPRIGHT, ENDDOWNRIGHT")
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            feature = (BOND_TYPE_INDEX[btype], BOND_DIRECTION_INDEX[bdir])
            src += [i, j]
            dst += [j, i]
            feats += [feature, feature]
        edge_index = np.array([src, dst], dtype=np.int64).reshape(2, -1)
        edge_features = np.array(feats, dtype=np.int64).reshape(-1, 2)
        return GraphData(node_features=atoms, edge_index=edge_index, edge_features=edge_features)

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

