"""A molecule as the 2+2 integer graph arrays of Hu et al. pretrain-gnns, with RDKit and numpy only.

:class:`~deepchem_pintuning.featurizer.PretrainGNNFeaturizer` wraps these arrays into DeepChem
``GraphData`` objects; this module has no DeepChem or torch import, so that a library can be
featurized in a worker process that starts in a fraction of a second
(:func:`~deepchem_pintuning.user_assay.featurize_ahead`). The index tables are documented in
:mod:`deepchem_pintuning.featurizer`.
"""
from __future__ import annotations

import pickle
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO, List, Optional, Sequence, Tuple

import numpy as np
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

GraphArrays = Tuple[np.ndarray, np.ndarray, np.ndarray]  # node features, edge index, edge features


class UnsupportedMoleculeError(ValueError):
    """A molecule has an atom or bond that the pretrain-gnns embedding tables cannot represent."""


def graph_arrays(mol: Chem.Mol, kekulize: bool = False) -> GraphArrays:
    """``(node_features [n_atoms, 2], edge_index [2, 2 n_bonds], edge_features [2 n_bonds, 2])`` of ``mol``.

    Every bond appears in both directions (``i -> j``, then ``j -> i``) with the same features.
    Raises :class:`UnsupportedMoleculeError` for atoms or bonds outside the embedding tables.

    Examples
    --------
    >>> nodes, edges, bonds = graph_arrays(Chem.MolFromSmiles("C=O"))
    >>> nodes.tolist(), edges.tolist(), bonds.tolist()
    ([[5, 0], [7, 0]], [[0, 1], [1, 0]], [[1, 0], [1, 0]])
    """
    original = mol
    if kekulize:  # on a copy: the caller's molecule keeps its aromatic bonds
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol)
    atoms = [(atom.GetAtomicNum(), atom.GetChiralTag()) for atom in mol.GetAtoms()]
    for index, (z, tag) in enumerate(atoms):
        if not 1 <= z <= MAX_ATOMIC_NUMBER:
            raise UnsupportedMoleculeError(
                f"{Chem.MolToSmiles(original)}: atom {index} has atomic number {z}; the embedding "
                f"table covers 1..{MAX_ATOMIC_NUMBER} (dummy atoms '*' are not allowed)")
        if tag not in CHIRALITY_INDEX:
            raise UnsupportedMoleculeError(
                f"{Chem.MolToSmiles(original)}: atom {index} ({mol.GetAtomWithIdx(index).GetSymbol()}) has "
                f"chiral tag {tag}; the pretrain-gnns chirality table only has UNSPECIFIED, TETRAHEDRAL_CW "
                "and TETRAHEDRAL_CCW")
    node_features = np.array([(z - 1, CHIRALITY_INDEX[tag]) for z, tag in atoms], dtype=np.int64).reshape(-1, 2)

    bonds = [(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond.GetBondType(), bond.GetBondDir())
             for bond in mol.GetBonds()]
    for index, (_, _, btype, bdir) in enumerate(bonds):
        if btype not in BOND_TYPE_INDEX:
            raise UnsupportedMoleculeError(
                f"{Chem.MolToSmiles(original)}: bond {index} has type {btype}; supported: "
                "SINGLE, DOUBLE, TRIPLE, AROMATIC")
        if bdir not in BOND_DIRECTION_INDEX:
            raise UnsupportedMoleculeError(
                f"{Chem.MolToSmiles(original)}: bond {index} has direction {bdir}; supported: "
                "NONE, ENDUPRIGHT, ENDDOWNRIGHT")
    ends = np.array([(i, j) for i, j, _, _ in bonds], dtype=np.int64).reshape(-1, 2)
    edge_index = np.stack([ends, ends[:, ::-1]], axis=1).reshape(-1, 2).T.copy()
    features = np.array([(BOND_TYPE_INDEX[t], BOND_DIRECTION_INDEX[d]) for _, _, t, d in bonds],
                        dtype=np.int64).reshape(-1, 2)
    return node_features, edge_index, np.repeat(features, 2, axis=0)


def smiles_graph_arrays(smiles: str, kekulize: bool = False) -> Tuple[Optional[GraphArrays], Optional[str]]:
    """Parse ``smiles`` once: ``(arrays, None)``, or ``(None, why it cannot be featurized)``.

    Examples
    --------
    >>> smiles_graph_arrays("")[1], smiles_graph_arrays("C1CC")[1], smiles_graph_arrays("[Na+]")[0][0].tolist()
    ('empty SMILES', 'RDKit could not parse the SMILES', [[10, 0]])
    """
    if not smiles:
        return None, "empty SMILES"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, "RDKit could not parse the SMILES"
    if mol.GetNumAtoms() == 0:
        return None, "the molecule has no atoms"
    try:
        return graph_arrays(mol, kekulize), None
    except UnsupportedMoleculeError as error:
        return None, str(error)


@dataclass
class FlatGraphs:
    """Many molecules' graph arrays concatenated (what crosses a process boundary cheaply).

    ``bonds`` holds each molecule's own atom numbers; ``kept`` are the positions, among the inputs,
    of the molecules that could be featurized, and ``reasons`` says for every input why not
    (``""`` when it could).
    """

    n_atoms: np.ndarray        # [molecules]
    n_bonds: np.ndarray        # [molecules] directed bonds
    atoms: np.ndarray          # [atoms, 2]
    bonds: np.ndarray          # [2, directed bonds]
    bond_features: np.ndarray  # [directed bonds, 2]
    kept: np.ndarray           # [molecules]
    reasons: List[str]         # [inputs]


def flat_graphs(smiles: Sequence[str], kekulize: bool = False) -> FlatGraphs:
    """Featurize every SMILES (once each) into one :class:`FlatGraphs`.

    Examples
    --------
    >>> flat = flat_graphs(["CCO", "", "C#N"])
    >>> flat.n_atoms.tolist(), flat.n_bonds.tolist(), flat.kept.tolist(), flat.reasons
    ([3, 2], [4, 2], [0, 2], ['', 'empty SMILES', ''])
    """
    arrays, kept, reasons = [], [], []
    for position, text in enumerate(smiles):
        graph, reason = smiles_graph_arrays(text, kekulize)
        if graph is not None:
            arrays.append(graph)
            kept.append(position)
        reasons.append(reason or "")
    return FlatGraphs(n_atoms=np.array([len(a) for a, _, _ in arrays], dtype=np.int64),
                      n_bonds=np.array([e.shape[1] for _, e, _ in arrays], dtype=np.int64),
                      atoms=np.concatenate([np.zeros((0, 2), np.int64), *(a for a, _, _ in arrays)]),
                      bonds=np.concatenate([np.zeros((2, 0), np.int64), *(e for _, e, _ in arrays)], axis=1),
                      bond_features=np.concatenate([np.zeros((0, 2), np.int64), *(f for _, _, f in arrays)]),
                      kept=np.asarray(kept, dtype=np.int64), reasons=reasons)


def _write_frame(stream: BinaryIO, value) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: BinaryIO):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the featurizer process closed its output")
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


class FeaturizerProcess:
    """:func:`flat_graphs` in a separate Python process, one request at a time, answered in order.

    The process runs this file by path, so it imports RDKit and numpy but not the
    ``deepchem_pintuning`` package (DeepChem, torch): it starts in about 0.1 s and takes ~60 MB.
    Call :meth:`result` for a request before making the next one (the pipes then never fill
    both ways). A failure in the process is raised here as ``RuntimeError``.

    Examples
    --------
    >>> with FeaturizerProcess() as process:
    ...     process.request(["CCO", "C1C"])
    ...     process.result().reasons
    ['', 'RDKit could not parse the SMILES']
    """

    def __init__(self, kekulize: bool = False) -> None:
        self.kekulize = kekulize
        code = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        self._process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._outstanding = 0

    def request(self, smiles: Sequence[str]) -> None:
        try:
            _write_frame(self._process.stdin, (list(smiles), self.kekulize))
        except BrokenPipeError:
            raise self._ended() from None
        self._outstanding += 1

    def result(self) -> FlatGraphs:
        try:
            answer = _read_frame(self._process.stdout)
        except EOFError:
            raise self._ended() from None
        self._outstanding -= 1
        if isinstance(answer, str):
            raise RuntimeError(f"the featurizer process failed: {answer}")
        return FlatGraphs(*answer)

    def _ended(self) -> RuntimeError:
        return RuntimeError(f"the featurizer process ended (exit status {self._process.wait()})")

    def close(self) -> None:
        """End the process: at once when an answer is still due (the caller stopped early)."""
        if self._outstanding:
            self._process.kill()
        try:
            self._process.stdin.close()
        except BrokenPipeError:  # it had ended already
            pass
        self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> "FeaturizerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The loop of a :class:`FeaturizerProcess`: SMILES lists in, :class:`FlatGraphs` fields out."""
    while True:
        try:
            smiles, kekulize = _read_frame(requests)
        except EOFError:
            return
        try:
            flat = flat_graphs(smiles, kekulize)
            # the fields, not the object: here the class is ``__main__.FlatGraphs``, unknown to the caller
            _write_frame(answers, tuple(getattr(flat, f.name) for f in fields(FlatGraphs)))
        except Exception as error:  # reported to the caller, who raises it
            _write_frame(answers, f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle: it ends this process
    _serve(sys.stdin.buffer, sys.stdout.buffer)
