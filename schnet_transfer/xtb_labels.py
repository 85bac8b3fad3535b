"""GFN-xTB labels of one molecule with ``tblite``: HOMO-LUMO gap, energy, solvation.

The cheap quantum-chemistry labels of the pre-training set: a GFN2-xTB (or
GFN1-xTB) single point gives the total energy and the HOMO-LUMO gap; a second
single point with ALPB or GBSA implicit water at the same geometry gives the
solvation free energy as the energy difference to the gas phase.  An optional
xTB geometry optimisation (through tblite's ASE calculator) runs first.

Molecules that xTB would label without complaint but wrongly are refused
(:func:`check_molecule`, ``LabelError`` with stage ``geometry`` or ``spin``):

* two atoms closer than :data:`MIN_INTERATOMIC_DISTANCE` (a broken geometry);
* an odd electron count (sum of atomic numbers minus the total charge) without
  an explicit ``multiplicity``: a radical cannot be a closed-shell singlet;
* a ``multiplicity`` whose unpaired electrons (``multiplicity - 1``, xTB's
  ``uhf``) do not fit the parity of the electron count;
* a singlet calculation that leaves a frontier orbital about half filled
  (occupation between 0.5 and 1.5): degenerate frontier orbitals, the mark
  of an open-shell ground state such as triplet O2.

Not detected: an even-electron open-shell ground state whose orbitals are not
degenerate at the given geometry (some diradicals, metal complexes); give the
multiplicity for those.  With a multiplicity the calculation keeps restricted
occupations (doubly, singly or not occupied orbitals) and the gap is the one
between the highest doubly occupied and the lowest not doubly occupied orbital,
the smaller of the two spin channels' gaps.

Examples
--------
>>> import numpy as np
>>> from schnet_transfer.xtb_labels import XtbSettings, xtb_labels
>>> numbers = np.array([8, 1, 1])
>>> positions = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.48], [0.0, -0.76, -0.48]])
>>> labels = xtb_labels(numbers, positions, XtbSettings())
>>> 5.0 < labels["gap"] < 20.0 and labels["hydration_free_energy"] < 0.0
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.units import Bohr, Hartree, kB, kcal, mol

__all__ = [
    "XtbSettings",
    "LabelError",
    "check_molecule",
    "xtb_labels",
    "optimize_geometry",
    "LABEL_UNITS",
    "MIN_INTERATOMIC_DISTANCE",
]

#: Units of the labels written to the database.
LABEL_UNITS = {"gap": "eV", "energy": "eV", "hydration_free_energy": "kcal/mol"}

#: Closest allowed approach of two atoms in Å; the shortest real bond (H2) is 0.74 Å.
MIN_INTERATOMIC_DISTANCE = 0.5

_HARTREE_TO_KCAL_PER_MOL = Hartree / (kcal / mol)


@dataclass(frozen=True)
class XtbSettings:
    """Settings of the xTB labelling, stored verbatim in the database provenance.

    Parameters
    ----------
    method
        ``"GFN2-xTB"`` (default) or ``"GFN1-xTB"``.
    solvation_model
        ``"alpb"`` or ``"gbsa"`` implicit solvation for the solvation free energy.
    solvent
        Solvent name understood by tblite.
    accuracy, max_iter, electronic_temperature
        SCC settings (temperature in K).
    optimize
        Relax the geometry with xTB (BFGS) before the single points.
    fmax
        Force threshold of the optimisation in eV/Å.
    seed
        Seed of the RDKit embedding of SMILES inputs.
    multiplicity
        Spin multiplicity ``2S + 1`` of every molecule (xTB ``uhf`` is
        ``multiplicity - 1``).  None (default): closed-shell singlets only,
        molecules with an odd electron count are refused.
    """

    method: str = "GFN2-xTB"
    solvation_model: str = "alpb"
    solvent: str = "water"
    accuracy: float = 1.0
    max_iter: int = 250
    electronic_temperature: float = 300.0
    optimize: bool = False
    fmax: float = 0.05
    seed: int = 0
    multiplicity: int | None = None

    def __post_init__(self):
        if self.method not in {"GFN2-xTB", "GFN1-xTB"}:
            raise ValueError(f"method must be GFN2-xTB or GFN1-xTB, not {self.method!r}")
        if self.solvation_model not in {"alpb", "gbsa"}:
            raise ValueError(
                f"solvation_model must be alpb or gbsa, not {self.solvation_model!r}"
            )
        if self.multiplicity is not None and self.multiplicity < 1:
            raise ValueError(f"multiplicity must be >= 1, not {self.multiplicity}")

    @property
    def unpaired_electrons(self) -> int | None:
        """xTB's ``uhf``: ``multiplicity - 1``, or None for tblite's default."""
        return None if self.multiplicity is None else self.multiplicity - 1

    def provenance(self) -> dict[str, Any]:
        """Method, program version and all settings, for the database metadata.

        ``multiplicity`` appears only when set, so databases written before the
        option existed are resumed with the default settings.
        """
        settings = asdict(self)
        if self.multiplicity is None:
            del settings["multiplicity"]
        return {
            "program": "tblite",
            "tblite_version": version("tblite"),
            "units": dict(LABEL_UNITS),
            "solvation": "E(solvated) - E(gas) at the same geometry",
            **settings,
        }


class LabelError(RuntimeError):
    """The xTB calculation of a molecule failed (``stage`` says where)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message


def check_molecule(
    numbers: np.ndarray, positions: np.ndarray, charge: int = 0, multiplicity: int | None = None
) -> None:
    """Refuse a broken geometry or an electron count that does not fit the spin state.

    Parameters
    ----------
    numbers, positions
        Atomic numbers ``(n,)`` and coordinates in Å ``(n, 3)``.
    charge
        Total charge.
    multiplicity
        Spin multiplicity; None means a closed-shell singlet is expected.

    Raises
    ------
    LabelError
        Stage ``geometry`` naming the closest atom pair (1-based) and their
        distance, or stage ``spin`` naming the electron count.

    Examples
    --------
    >>> methyl = (np.array([6, 1, 1, 1]), np.eye(4, 3) * 1.1)
    >>> try:
    ...     check_molecule(*methyl)
    ... except LabelError as err:
    ...     print(err.stage, "-", err.reason.split(":")[0])
    spin - 9 electrons (atomic numbers sum to 9, charge 0)
    >>> check_molecule(*methyl, multiplicity=2)  # a radical: one unpaired electron
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    if len(numbers) > 1:
        distances = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
        distances[np.diag_indices(len(numbers))] = np.inf
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        i, j = sorted((int(i), int(j)))
        if distances[i, j] < MIN_INTERATOMIC_DISTANCE:
            raise LabelError(
                "geometry",
                f"atoms {i + 1} ({chemical_symbols[numbers[i]]}) and {j + 1} "
                f"({chemical_symbols[numbers[j]]}) are {distances[i, j]:.3f} Å apart, closer "
                f"than {MIN_INTERATOMIC_DISTANCE} Å: broken geometry",
            )
    electrons = int(numbers.sum()) - int(charge)
    counted = f"{electrons} electrons (atomic numbers sum to {int(numbers.sum())}, charge {charge})"
    if electrons < 0:
        raise LabelError("spin", f"{counted}: a negative electron count")
    if multiplicity is None:
        if electrons % 2:
            raise LabelError(
                "spin",
                f"{counted}: an odd count cannot be a closed-shell singlet; open-shell species "
                "are refused unless a multiplicity is given (2 for a radical)",
            )
        return
    unpaired = multiplicity - 1
    if unpaired > electrons or (electrons - unpaired) % 2:
        parity = "an odd" if unpaired % 2 else "an even"
        raise LabelError(
            "spin",
            f"{counted}: multiplicity {multiplicity} ({unpaired} unpaired) needs "
            f"{parity} electron count (at least {unpaired})",
        )


def _calculator(numbers, positions, charge, settings: XtbSettings, solvated: bool):
    from tblite.interface import Calculator

    calc = Calculator(
        settings.method, numbers, positions / Bohr, charge=charge,
        uhf=settings.unpaired_electrons,
    )
    calc.set("verbosity", 0)
    calc.set("accuracy", settings.accuracy)
    calc.set("max-iter", settings.max_iter)
    calc.set("temperature", settings.electronic_temperature * kB / Hartree)
    if solvated:
        calc.add(f"{settings.solvation_model}-solvation", settings.solvent)
    return calc


def _singlepoint(numbers, positions, charge, settings, solvated):
    try:
        return _calculator(numbers, positions, charge, settings, solvated).singlepoint()
    except Exception as err:  # tblite raises TBLiteRuntimeError on SCF failure
        raise LabelError("scf", str(err).strip() or type(err).__name__) from err


def _homo_lumo_gap(result, singlet: bool) -> float:
    energies = np.asarray(result.get("orbital-energies"))
    occupations = np.asarray(result.get("orbital-occupations"))
    if energies.ndim == 2:  # spin-polarised: combine both channels
        energies, occupations = energies.ravel(), occupations.ravel() * 2.0
    half = occupations[(occupations > 0.5) & (occupations < 1.5)]
    if singlet and half.size:
        raise LabelError(
            "spin",
            f"{half.size} frontier orbitals about half filled (occupations "
            f"{np.round(half, 2).tolist()}) in a closed-shell singlet calculation: degenerate "
            "frontier orbitals of an open-shell ground state (e.g. triplet O2); give the "
            "multiplicity (3 for a triplet) to label it",
        )
    occupied = occupations > 1.0
    if occupied.all() or not occupied.any():
        raise LabelError("scf", "no HOMO/LUMO pair in the orbital occupations")
    return float((energies[~occupied].min() - energies[occupied].max()) * Hartree)


def optimize_geometry(
    numbers: np.ndarray, positions: np.ndarray, charge: int, settings: XtbSettings
) -> np.ndarray:
    """Relax a geometry with xTB forces (ASE BFGS); returns positions in Å.

    Raises
    ------
    LabelError
        If :func:`check_molecule` refuses the molecule or BFGS fails.
    """
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    check_molecule(numbers, positions, charge, settings.multiplicity)
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(
        method=settings.method,
        charge=charge,
        multiplicity=settings.multiplicity,
        accuracy=settings.accuracy,
        max_iterations=settings.max_iter,
        electronic_temperature=settings.electronic_temperature,
        verbosity=0,
    )
    try:
        converged = BFGS(atoms, logfile=None).run(fmax=settings.fmax, steps=500)
    except Exception as err:
        raise LabelError("optimisation", str(err).strip() or type(err).__name__) from err
    if not converged:
        raise LabelError("optimisation", f"not converged to fmax={settings.fmax} eV/Å")
    return atoms.positions.copy()


def xtb_labels(
    numbers: np.ndarray,
    positions: np.ndarray,
    settings: XtbSettings,
    charge: int = 0,
) -> dict[str, float]:
    """Compute gap (eV), total energy (eV) and solvation free energy (kcal/mol).

    Parameters
    ----------
    numbers
        Atomic numbers ``(n,)``.
    positions
        Coordinates in Å ``(n, 3)``; already optimised unless ``settings.optimize``.
    settings
        Method and SCC settings.
    charge
        Total molecular charge.

    Raises
    ------
    LabelError
        If :func:`check_molecule` refuses the molecule, the singlet calculation
        leaves half-filled frontier orbitals, a single point does not
        converge, or a label is not finite.
    """
    check_molecule(numbers, positions, charge, settings.multiplicity)
    gas = _singlepoint(numbers, positions, charge, settings, solvated=False)
    solvated = _singlepoint(numbers, positions, charge, settings, solvated=True)
    labels = {
        "gap": _homo_lumo_gap(gas, singlet=settings.multiplicity in (None, 1)),
        "energy": float(gas.get("energy") * Hartree),
        "hydration_free_energy": float(
            (solvated.get("energy") - gas.get("energy")) * _HARTREE_TO_KCAL_PER_MOL
        ),
    }
    bad = [k for k, v in labels.items() if not np.isfinite(v)]
    if bad:
        raise LabelError("scf", f"non-finite labels {bad}")
    return labels
