"""GFN-xTB labels of one molecule with ``tblite``: HOMO-LUMO gap, energy, solvation.

The cheap quantum-chemistry labels of the pre-training set: a GFN2-xTB (or
GFN1-xTB) single point gives the total energy and the HOMO-LUMO gap; a second
single point with ALPB or GBSA implicit water at the same geometry gives the
solvation free energy as the energy difference to the gas phase.  An optional
xTB geometry optimisation (through tblite's ASE calculator) runs first.

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
from ase.units import Bohr, Hartree, kB, kcal, mol

__all__ = ["XtbSettings", "LabelError", "xtb_labels", "optimize_geometry", "LABEL_UNITS"]

#: Units of the labels written to the database.
LABEL_UNITS = {"gap": "eV", "energy": "eV", "hydration_free_energy": "kcal/mol"}

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

    def __post_init__(self):
        if self.method not in {"GFN2-xTB", "GFN1-xTB"}:
            raise ValueError(f"method must be GFN2-xTB or GFN1-xTB, not {self.method!r}")
        if self.solvation_model not in {"alpb", "gbsa"}:
            raise ValueError(
                f"solvation_model must be alpb or gbsa, not {self.solvation_model!r}"
            )

    def provenance(self) -> dict[str, Any]:
        """Method, program version and all settings, for the database metadata."""
        return {
            "program": "tblite",
            "tblite_version": version("tblite"),
            "units": dict(LABEL_UNITS),
            "solvation": "E(solvated) - E(gas) at the same geometry",
            **asdict(self),
        }


class LabelError(RuntimeError):
    """The xTB calculation of a molecule failed (``stage`` says where)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message


def _calculator(numbers, positions, charge, settings: XtbSettings, solvated: bool):
    from tblite.interface import Calculator

    calc = Calculator(settings.method, numbers, positions / Bohr, charge=charge)
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


def _homo_lumo_gap(result) -> float:
    energies = np.asarray(result.get("orbital-energies"))
    occupations = np.asarray(result.get("orbital-occupations"))
    if energies.ndim == 2:  # spin-polarised: combine both channels
        energies, occupations = energies.ravel(), occupations.ravel() * 2.0
    occupied = occupations > 1.0
    if occupied.all() or not occupied.any():
        raise LabelError("scf", "no HOMO/LUMO pair in the orbital occupations")
    return float((energies[~occupied].min() - energies[occupied].max()) * Hartree)


def optimize_geometry(
    numbers: np.ndarray, positions: np.ndarray, charge: int, settings: XtbSettings
) -> np.ndarray:
    """Relax a geometry with xTB forces (ASE BFGS); returns positions in Å."""
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(
        method=settings.method,
        charge=charge,
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
        If a single point does not converge or a label is not finite.
    """
    gas = _singlepoint(numbers, positions, charge, settings, solvated=False)
    solvated = _singlepoint(numbers, positions, charge, settings, solvated=True)
    labels = {
        "gap": _homo_lumo_gap(gas),
        "energy": float(gas.get("energy") * Hartree),
        "hydration_free_energy": float(
            (solvated.get("energy") - gas.get("energy")) * _HARTREE_TO_KCAL_PER_MOL
        ),
    }
    bad = [k for k, v in labels.items() if not np.isfinite(v)]
    if bad:
        raise LabelError("scf", f"non-finite labels {bad}")
    return labels
