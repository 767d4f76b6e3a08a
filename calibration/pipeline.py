"""``rig calibrate``: dark frames, flat mirror, camera registration, PSF measurement, mode
pokes (-> the device-to-Noll matrix) and a closed-loop verification, into one HDF5 file.

Every step stores its results under its own group and marks itself done (attribute
``done`` on the group); running again on the same file skips finished steps (``redo`` lists
steps to run again), and the poke step also resumes mode by mode. Layout::

    dark/{privacy,reference}          (H, W, 3) float32 mean dark frames, [0, 1]
    flat/voltages_v                   segment voltages after relax
    registration/homography           (3, 3) reference px -> privacy px (privlens pixel
                                      frame, centres at i + 0.5); attrs rms/max error
    psf/stack                         (D, K, K) measured flat-mirror PSFs (green), per plane
    psf/diversity_um, psf/fit_um      Z4 offset per plane; fitted Noll 1..15 (um OPD)
    pokes/{label}{+,-}/stack          measured PSF stacks per poke; attrs fit_um, loss, corr
    device_map/matrix_um              (15, 12) um OPD per device unit; attrs amplitude_range
    verify/...                        per-iteration amplitudes, fits, correlation, Strehl
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np

from calibration.device_map import (
    DeviceCalibration,
    device_to_noll,
    noll_to_device,
    prototype_amplitudes,
)
from calibration.homography import to_pixel_frame
from calibration.phase_retrieval import PhaseRetrievalConfig, PSFFitter
from calibration.psf_measure import measure_psf_stack, to_float
from calibration.registration import register_pair
from hardware.mirror_modes import DEVICE_MODES, N_DEVICE_MODES
from optics.kit.config import to_dict
from optics.kit.progress import progress_bar
from optics.presets import get_preset

__all__ = ["CalibrationConfig", "STEPS", "calibrate"]

log = logging.getLogger(__name__)

STEPS = ("dark", "flat", "registration", "psf", "pokes", "verify")


@dataclasses.dataclass
class CalibrationConfig:
    dark_frames: int = 4
    average_frames: int = 2  # frames averaged per PSF measurement
    psf_crop_px: int = 0  # 0: the optics preset's PSF window
    poke_amplitude: float = 0.3  # device units, +/- per mode
    scan_um: float = 1.2  # half-range of the 1-D start scan per poke, um OPD
    target_peak: float = 0.6  # auto-exposure target (fraction of full scale)
    verify_iterations: int = 2
    checkerboard: tuple[int, ...] = (7, 7)  # inner corners
    channel: int = 1  # colour channel fitted (green)
    pupil_samples: int = 128  # phase-retrieval model pupil grid


def _done(f: h5py.File, step: str) -> bool:
    return step in f and bool(f[step].attrs.get("done", False))


def _group(f: h5py.File, step: str) -> h5py.Group:
    if step in f:
        del f[step]
    return f.create_group(step)


def _mark(f: h5py.File, step: str, **attrs) -> None:
    g = f[step]
    for k, v in attrs.items():
        g.attrs[k] = v
    g.attrs["done"] = True
    g.attrs["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    f.flush()


class _Calibrator:
    def __init__(self, rig, out: Path, config: CalibrationConfig, target_um=None):
        self.rig = rig
        self.cfg = config
        self.out = out
        self.target_um = target_um
        optics = get_preset(rig.config.optics)
        if rig.simulated:
            optics = optics.at_image_size(rig.config.sim.image_size_px)
        self.crop = config.psf_crop_px or optics.psf_size_px
        self.fitter = PSFFitter(optics.replace(psf_size_px=self.crop, n_modes=15),
                                PhaseRetrievalConfig(wavelength_index=config.channel,
                                                     pupil_samples=config.pupil_samples))
        self.dark = None
        self.exposure = 1.0

    # -------------------------------------------------------------- primitives
    def _green(self, frame):
        return frame[..., self.cfg.channel] if frame.ndim == 3 else frame

    def _auto_exposed_frame(self) -> np.ndarray:
        """Averaged privacy frame with the peak near ``target_peak`` (dark subtracted)."""
        dark = self.dark[..., self.cfg.channel]
        for _ in range(8):
            self.exposure = self.rig.set_exposure(self.exposure)
            f = self._green(to_float(self.rig.capture(privacy_only=True).privacy.image))
            peak = float((f - dark).max())
            if peak <= 0:
                self.exposure *= 16
                continue
            if 0.45 * self.cfg.target_peak < peak < min(0.92, 1.5 * self.cfg.target_peak):
                break
            self.exposure *= float(np.clip(self.cfg.target_peak / peak, 0.1, 30.0))
        frames = [f] + [self._green(to_float(self.rig.capture(privacy_only=True).privacy.image))
                        for _ in range(self.cfg.average_frames - 1)]
        return np.mean(frames, axis=0)

    def _stage_positions(self):
        st = self.rig.config.stage
        if self.rig.stage is None:
            log.warning("no stage: PSFs are measured in focus only, so the signs of the even "
                        "modes (defocus, astigmatism, spherical, tetrafoil) are ambiguous")
            return [None]
        return [st.focus_mm + d for d in st.diversity_mm]

    def _measure_stacks(self, settings: list[np.ndarray], desc: str) -> list[tuple]:
        """For each mirror setting (12,), the PSF stack over the diversity planes, captured
        with the stage moved as rarely as possible. Returns [(stack, diversity_um)]."""
        positions = self._stage_positions()
        frames = [[None] * len(positions) for _ in settings]
        actual = [0.0] * len(positions)
        bar = progress_bar(total=len(settings) * len(positions), desc=desc, leave=False)
        for p, pos in enumerate(positions):
            if pos is not None:
                self.rig.stage.move_to(pos, self.rig.config.stage.timeout_s)
                actual[p] = self.rig.stage.position_mm - self.rig.config.stage.focus_mm
            for s, amps in enumerate(settings):
                self.rig.mirror.set_zernike(amps)
                frames[s][p] = self._auto_exposed_frame()
                bar.update()
        bar.close()
        div = np.asarray(actual) * self.rig.config.diversity_um_per_mm()
        dark = self.dark[..., self.cfg.channel]
        return [(measure_psf_stack(fr, dark, self.crop)[0], div) for fr in frames]

    # -------------------------------------------------------------- steps
    def step_dark(self, f):
        self.rig.show("dark")
        pairs = [self.rig.capture() for _ in progress_bar(range(self.cfg.dark_frames), desc="dark",
                                                  leave=False)]
        g = _group(f, "dark")
        p = np.mean([to_float(q.privacy.image) for q in pairs], axis=0)
        r = np.mean([to_float(q.reference.image) for q in pairs], axis=0)
        g["privacy"] = p.astype(np.float32)
        g["reference"] = r.astype(np.float32)
        _mark(f, "dark", privacy_mean=float(p.mean()), reference_mean=float(r.mean()),
              privacy_std=float(np.std([to_float(q.privacy.image) for q in pairs])))

    def step_flat(self, f):
        steps = self.rig.mirror.relax()
        g = _group(f, "flat")
        g["voltages_v"] = self.rig.mirror.get_voltages()
        _mark(f, "flat", relax_steps=int(steps))

    def step_registration(self, f):
        self.rig.mirror.relax()
        self.rig.show("checkerboard")
        self.rig.set_exposure(1.0)
        pair = self.rig.capture()
        reg = register_pair(pair.reference.image, pair.privacy.image,
                            tuple(self.cfg.checkerboard))
        g = _group(f, "registration")
        g["homography"] = to_pixel_frame(reg.homography)
        g["homography"].attrs["convention"] = ("reference px -> privacy px, pixel i covers "
                                               "[i, i+1) (privlens frame)")
        g["reference_corners"] = reg.reference_corners
        g["privacy_corners"] = reg.privacy_corners
        g["privacy_frame"] = pair.privacy.image
        g["reference_frame"] = pair.reference.image
        _mark(f, "registration", rms_error_px=reg.rms_error_px, max_error_px=reg.max_error_px)

    def step_psf(self, f):
        self.rig.show("pinhole")
        flat = np.zeros(N_DEVICE_MODES)
        (stack, div), = self._measure_stacks([flat], "psf")
        fit = self.fitter.fit(stack, div)
        g = _group(f, "psf")
        g["stack"] = stack
        g["diversity_um"] = div
        g["fit_um"] = fit.coefficients_um
        _mark(f, "psf", loss=fit.loss, correlation=fit.correlation)

    def step_pokes(self, f):
        self.rig.show("pinhole")
        a0 = self.cfg.poke_amplitude
        g = f.require_group("pokes")
        todo = []
        for k, mode in enumerate(DEVICE_MODES):
            for sign, tag in ((1, "+"), (-1, "-")):
                if f"{mode.label}{tag}" not in g:
                    amps = np.zeros(N_DEVICE_MODES)
                    amps[k] = sign * a0
                    todo.append((k, tag, amps))
        flat_fit = f["psf/fit_um"][()]
        if todo:
            log.info("poking %d settings (%d done before)", len(todo), 24 - len(todo))
            stacks = self._measure_stacks([t[2] for t in todo], "pokes")
            pairs = list(zip(todo, stacks, strict=True))
            for (k, tag, amps), (stack, div) in progress_bar(pairs, desc="fits", leave=False):
                mode = DEVICE_MODES[k]
                start = self.fitter.scan_start(
                    stack, div, flat_fit, mode.noll,
                    flat_fit[mode.noll - 1] + np.linspace(-self.cfg.scan_um, self.cfg.scan_um,
                                                          49))
                fit = self.fitter.fit(stack, div, starts=[start])
                sub = g.create_group(f"{mode.label}{tag}")
                sub["stack"] = stack
                sub["diversity_um"] = div
                sub["amplitudes"] = amps
                sub.attrs["fit_um"] = fit.coefficients_um
                sub.attrs["loss"] = fit.loss
                sub.attrs["correlation"] = fit.correlation
                f.flush()
        self.rig.mirror.relax()
        d = np.zeros((15, N_DEVICE_MODES))
        for k, mode in enumerate(DEVICE_MODES):
            cp = g[f"{mode.label}+"].attrs["fit_um"]
            cm = g[f"{mode.label}-"].attrs["fit_um"]
            d[:, k] = (cp - cm) / (2 * a0)
        d[:3] = 0.0  # piston, tip, tilt: nuisance terms of the fit, not mirror modes
        _mark(f, "pokes", amplitude=a0,
              min_correlation=float(min(g[k].attrs["correlation"] for k in g)))
        gm = _group(f, "device_map")
        gm["matrix_um"] = d
        rng = (self.rig.mirror.amplitude_min, self.rig.mirror.amplitude_max)
        _mark(f, "device_map", amplitude_range=np.array(rng, dtype=float))

    def step_verify(self, f):
        calib = DeviceCalibration(f["device_map/matrix_um"][()],
                                  tuple(f["device_map"].attrs["amplitude_range"]), str(self.out))
        flat_fit = f["psf/fit_um"][()]
        if self.target_um is None:
            target = np.zeros(15)
            for j, v in device_to_noll(0.8 * prototype_amplitudes(), calib).items():
                target[j - 1] = v
            source = "0.8 x the paper's prototype amplitudes, mapped through this calibration"
        else:
            target = np.zeros(15)
            for j, v in self.target_um.items():
                if j <= 15:
                    target[j - 1] = v
            source = "user target"
        target[:3] = 0.0
        self.rig.show("pinhole")
        # the bench's own static aberration is part of what the mirror must cancel
        sol = noll_to_device(target - np.r_[0, 0, 0, flat_fit[3:]], calib, clip=True)
        amps = sol.amplitudes
        g = _group(f, "verify")
        g["target_um"] = target
        g.attrs["target_source"] = source
        ideal = None
        history = []
        for it in range(self.cfg.verify_iterations + 1):
            (stack, div), = self._measure_stacks([amps], f"verify {it}")
            fit = self.fitter.fit(stack, div, starts=[np.r_[0, 0, 0, target[3:] + flat_fit[3:]]])
            sim = self.fitter.model(np.r_[0, fit.coefficients_um[1:3], target[3:]],
                                    div).numpy()
            if ideal is None:
                ideal = self.fitter.model(np.zeros(15), [0.0]).numpy()[0].max()
            corr = float(np.corrcoef(stack[0].ravel(), sim[0].ravel())[0, 1])
            err = fit.coefficients_um[3:] - target[3:]
            rec = {"iteration": it, "amplitudes": amps.tolist(),
                   "fit_um": fit.coefficients_um.tolist(),
                   "rms_error_um": float(np.linalg.norm(err)), "correlation": corr,
                   "strehl_measured": float(stack[0].max() / ideal),
                   "strehl_target": float(sim[0].max() / ideal)}
            history.append(rec)
            g[f"stack_{it}"] = stack
            g[f"simulated_{it}"] = sim
            log.info("verify %d: rms error %.4f um, correlation %.4f", it,
                     rec["rms_error_um"], corr)
            if it < self.cfg.verify_iterations:
                step = noll_to_device(np.r_[0, 0, 0, -err], calib, clip=True).amplitudes
                lo, hi = calib.amplitude_range
                amps = np.clip(amps + step, lo, hi)
        self.rig.mirror.relax()
        g.attrs["history"] = json.dumps(history)
        _mark(f, "verify", rms_error_um=history[-1]["rms_error_um"],
              correlation=history[-1]["correlation"])


def calibrate(rig, out_dir, config: CalibrationConfig | None = None, redo=(), steps=STEPS,
              target_um=None) -> Path:
    """Run the calibration steps on ``rig``; results in ``out_dir/calibration.h5``. Returns
    the file's path."""
    config = config or CalibrationConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "calibration.h5"
    cal = _Calibrator(rig, path, config, target_um)
    bad = [s for s in list(steps) + list(redo) if s not in STEPS]
    if bad:
        raise ValueError(f"unknown calibration step(s) {bad}; steps are {', '.join(STEPS)}")
    with h5py.File(path, "a") as f:
        f.attrs["rig_config"] = json.dumps(_config_dict(rig.config))
        f.attrs["calibration_config"] = json.dumps(dataclasses.asdict(config))
        for step in steps:
            if _done(f, step) and step not in redo:
                log.info("%s: done before, skipped", step)
                if step == "dark":
                    cal.dark = f["dark/privacy"][()]
                continue
            needs = {"registration": "dark", "psf": "dark", "pokes": "psf", "verify": "pokes"}
            if step in needs and not _done(f, needs[step]):
                raise ValueError(f"step {step} needs step {needs[step]} first")
            if cal.dark is None and _done(f, "dark"):
                cal.dark = f["dark/privacy"][()]
            t0 = time.time()
            log.info("calibration step %s", step)
            getattr(cal, f"step_{step}")(f)
            if step == "dark":
                cal.dark = f["dark/privacy"][()]
            f[step].attrs["seconds"] = time.time() - t0
    return path


def _config_dict(cfg) -> dict:
    return to_dict(cfg)
