"""The Thorlabs DMP40/DMH40 Zernike API's 12 device modes and their nominal Noll partners.

The API takes 12 dimensionless amplitudes in [-1, 1] for Z4..Z15, numbered in ANSI/OSA order
*from 1* (Z5 is defocus), selected by bit flags (Thorlabs TLDFMX manual). privlens works in
Noll order (:mod:`optics.zernike`); the nominal map below pairs each device mode with the Noll
term of the same radial order n and azimuthal order m. Which sign, scale (micrometres of OPD
per device unit) and orientation a mode really has on a bench is not published: it is measured
by ``rig calibrate`` (:mod:`calibration`).
"""

from __future__ import annotations

import dataclasses

from optics.zernike import nm_to_noll

__all__ = ["DeviceMode", "DEVICE_MODES", "N_DEVICE_MODES", "ALL_MODES_FLAG", "mode_flags",
           "nominal_noll"]


@dataclasses.dataclass(frozen=True)
class DeviceMode:
    label: str  # Thorlabs' name: "Z4" .. "Z15"
    name: str  # Thorlabs' short description
    flag: int  # bit in the TLDFMX Zernike flags word
    n: int  # radial order
    m: int  # azimuthal order, ANSI sign (m < 0: sin term)

    @property
    def index(self) -> int:
        """Position in the 12-amplitude array, 0..11."""
        return int(self.label[1:]) - 4

    @property
    def noll(self) -> int:
        """Noll index of the Zernike term with the same (n, m)."""
        return nm_to_noll(self.n, self.m)


def _ansi_nm(j_from_one: int) -> tuple[int, int]:
    j = j_from_one - 1  # ANSI single index from 0: j = (n(n+2) + m) / 2
    n = 0
    while (n + 1) * (n + 2) // 2 <= j:
        n += 1
    m = 2 * j - n * (n + 2)
    return n, m


_NAMES = ("Ast45", "Defocus", "Ast0", "TreY", "ComX", "ComY", "TreX", "TetY", "SAstY", "SAb3",
          "SAstX", "TetX")

DEVICE_MODES: tuple[DeviceMode, ...] = tuple(
    DeviceMode(f"Z{k}", _NAMES[k - 4], 1 << (k - 4), *_ansi_nm(k)) for k in range(4, 16))
N_DEVICE_MODES = len(DEVICE_MODES)
ALL_MODES_FLAG = (1 << N_DEVICE_MODES) - 1


def mode_flags(indices=None) -> int:
    """Flags word selecting device modes by 0-based index (all 12 by default)."""
    if indices is None:
        return ALL_MODES_FLAG
    out = 0
    for i in indices:
        out |= DEVICE_MODES[i].flag
    return out


def nominal_noll() -> tuple[int, ...]:
    """Noll index of each device mode, in device order (Z4 -> 5, Z5 -> 4, ...)."""
    return tuple(d.noll for d in DEVICE_MODES)
