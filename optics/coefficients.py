"""Zernike coefficient files: JSON or YAML that name their convention and units.

Format::

    {"convention": "noll", "units": "um_opd", "coefficients": {"4": -0.8, "8": 0.2}}

``convention`` is ``noll`` (Noll indices from 1). ``units`` is one of ``um_opd``
(micrometres of optical path difference, the privlens unit), ``nm_opd`` or ``m_opd``.
Everything is converted to ``{noll_index: micrometres of OPD}`` on load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

__all__ = ["CoefficientsError", "UNITS_TO_UM", "load_coefficients", "save_coefficients",
           "parse_coefficients"]

UNITS_TO_UM = {"um_opd": 1.0, "nm_opd": 1e-3, "m_opd": 1e6}


class CoefficientsError(ValueError):
    """A coefficients file that cannot be used."""


def parse_coefficients(data, source: str = "coefficients") -> dict[int, float]:
    """Validate a parsed mapping; return ``{noll: um_opd}``."""
    if not isinstance(data, dict) or "coefficients" not in data:
        raise CoefficientsError(f"{source}: expected a mapping with a 'coefficients' entry")
    conv = data.get("convention", "noll")
    if conv != "noll":
        raise CoefficientsError(f"{source}: convention {conv!r} is not supported (use 'noll')")
    units = data.get("units", "um_opd")
    if units not in UNITS_TO_UM:
        raise CoefficientsError(
            f"{source}: units {units!r} unknown; use one of {list(UNITS_TO_UM)}"
        )
    coeffs = data["coefficients"]
    if isinstance(coeffs, list):  # a list means Noll 1, 2, 3, ...
        coeffs = {i + 1: v for i, v in enumerate(coeffs)}
    if not isinstance(coeffs, dict):
        raise CoefficientsError(f"{source}: 'coefficients' must be a mapping or a list")
    out = {}
    for key, value in coeffs.items():
        try:
            j = int(key)
            if str(key).strip() != str(j) and not isinstance(key, int):
                raise ValueError
        except (TypeError, ValueError):
            raise CoefficientsError(f"{source}: Noll index {key!r} is not an integer") from None
        if j < 1:
            raise CoefficientsError(f"{source}: Noll index {j} must be >= 1")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CoefficientsError(f"{source}: coefficient {j} is not a number: {value!r}")
        if not math.isfinite(value):
            raise CoefficientsError(f"{source}: coefficient {j} is not finite ({value})")
        out[j] = float(value) * UNITS_TO_UM[units]
    return dict(sorted(out.items()))


def load_coefficients(path) -> dict[int, float]:
    """Read a JSON or YAML coefficients file; returns ``{noll: um_opd}``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CoefficientsError(f"cannot read coefficients file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise CoefficientsError(f"{path}: not valid JSON/YAML ({str(e).splitlines()[0]})") from None
    return parse_coefficients(data, str(path))


def save_coefficients(coefficients_um: dict[int, float], path, **extra) -> Path:
    """Write ``{noll: um_opd}`` as JSON (``.json``) or YAML; ``extra`` keys are kept as
    metadata (e.g. ``camera='lopez2024'``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"convention": "noll", "units": "um_opd",
            "coefficients": {str(j): float(v) for j, v in sorted(coefficients_um.items())},
            **extra}
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
