"""The bench as one object: mirror, camera pair, optional stage, and (in simulation) the
renderer that feeds the virtual cameras.

``Rig(config)`` opens every device with the backend its config names. A ``sim`` device is
the *real* backend class talking to a device-level fake: the TLDFM ctypes backend loads the
fake C library, each gphoto2 worker process sees libgphoto2's virtual camera in its own
``VCAMERADIR``, and the APT backend talks to a fake controller on a pseudo-terminal. Only
:meth:`Rig.show` (what is in front of the bench) and :meth:`Rig.set_exposure` differ: on the
real bench they ask the operator / set the shutter, in simulation they drive the renderer.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from hardware.config import RigConfig
from hardware.devices import CameraPair, DeviceError, PairedFrame

__all__ = ["Rig"]

log = logging.getLogger(__name__)

#: Canon shutter speeds (s) the exposure control chooses from on the real bench.
_SHUTTER_S = [1 / 4000, 1 / 2000, 1 / 1000, 1 / 500, 1 / 250, 1 / 125, 1 / 60, 1 / 30, 1 / 15,
              1 / 8, 1 / 4, 1 / 2, 1.0]


def _shutter_label(t: float) -> str:
    return f"1/{round(1 / t)}" if t < 1 else f"{t:g}"


def _parse_shutter(label: str) -> float:
    if "/" in label:
        a, b = label.split("/")
        return float(a) / float(b)
    return float(label)


class Rig:
    """All devices of the bench. ``prompt(message)`` is called on the real bench when the
    operator must change the scene (default: log and continue)."""

    def __init__(self, config: RigConfig, prompt=None):
        self.config = config
        self.prompt = prompt or (lambda msg: log.warning("operator: %s", msg))
        self.sim = None
        self.mirror = self.cameras = self.stage = None
        self._fakes = []
        self._tmp = None
        self._base_shutter_s = _parse_shutter(config.privacy_camera.shutterspeed)
        self.exposure = 1.0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        cfg = self.config
        mirror_control = None
        if cfg.mirror.backend == "sim":
            from hardware.sim.fake_tldfm import FakeMirrorControl, HiddenMirror, build_fake_tldfm

            lib = build_fake_tldfm()
            mirror_control = FakeMirrorControl(lib)
            mirror_control.restore_defaults()
            s = cfg.sim
            if s.mirror_scales_um:
                mirror_control.set_mode_map(HiddenMirror(
                    s.mirror_scales_um, s.mirror_signs or (1,) * 12, s.mirror_rotation_deg))
            lib_path, lib_x = str(lib), str(lib)
        else:
            lib_path, lib_x = cfg.mirror.library, cfg.mirror.library_x
        from hardware.tldfm import TLDFMMirror

        self.mirror = TLDFMMirror(lib_path, lib_x, resource=cfg.mirror.resource or None,
                                  hysteresis=cfg.mirror.hysteresis)
        self.mirror_control = mirror_control

        if cfg.stage.backend == "sim":
            from hardware.sim.apt_device import FakeAptDevice

            fake = FakeAptDevice(serial=cfg.stage.serial or "27000001", model=cfg.stage.device,
                                 counts_per_mm=cfg.stage.counts_per_mm, velocity_mm_s=10.0,
                                 acceleration_mm_s2=40.0, start_mm=cfg.stage.focus_mm)
            self._fakes.append(fake)
            port, serial = fake.port, fake.serial
        else:
            port, serial = cfg.stage.port or None, cfg.stage.serial or None
        if cfg.stage.backend != "none":
            from hardware.apt_stage import AptStage

            self.stage = AptStage(port=port, serial=serial, device=cfg.stage.device,
                                  counts_per_mm=cfg.stage.counts_per_mm)

        cams = []
        vdirs = []
        for cam_cfg, name in ((cfg.privacy_camera, "privacy"),
                              (cfg.reference_camera, "reference")):
            from hardware.gphoto import GPhotoCamera

            if cam_cfg.backend == "sim":
                from hardware.sim.vcamera import VirtualCameraDir

                root = Path(cfg.sim.workdir) if cfg.sim.workdir else Path(self._tmpdir())
                n = cfg.sim.image_size_px
                vdir = VirtualCameraDir(root / f"vcamera-{name}", n, n)
                vdirs.append(vdir)
                cam = GPhotoCamera(cam_cfg.serial or vdir.serial, env=vdir.env,
                                   missing_settings="warn")
            else:
                if not cam_cfg.serial:
                    raise ValueError(f"{name}_camera.serial is empty: the real cameras are "
                                     f"opened by serial number (see `gphoto2 --auto-detect`)")
                vdirs.append(None)
                cam = GPhotoCamera(cam_cfg.serial, missing_settings="error")
            cams.append(cam)
            settings = cam_cfg.settings()
            if cam_cfg.backend == "sim":  # libgphoto2's virtual camera writes "0.0100s"
                settings["shutterspeed"] = f"{_parse_shutter(cam_cfg.shutterspeed):.4f}s"
            cam.configure(settings)
        self.cameras = CameraPair(cams[0], cams[1])
        self.timeout_s = max(cfg.privacy_camera.timeout_s, cfg.reference_camera.timeout_s)

        if cfg.any_sim:
            if not all(b == "sim" for b in (cfg.mirror.backend, cfg.privacy_camera.backend,
                                            cfg.reference_camera.backend)):
                raise ValueError("a simulated bench needs the mirror and both cameras "
                                 "simulated (use --sim)")
            from hardware.sim.bench import SimBench

            self.sim = SimBench(cfg, mirror_control, vdirs[0], vdirs[1], stage=self.stage)

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="privlens-rig-")
        return self._tmp.name

    # ------------------------------------------------------------------ use
    @property
    def simulated(self) -> bool:
        return self.sim is not None

    def show(self, scene: str) -> None:
        """Put ``scene`` in front of the bench: ``dark``, ``pinhole``, ``checkerboard``,
        ``faces`` or ``folder:PATH``."""
        if self.sim is not None:
            self.sim.set_scene(scene)
        else:
            self.prompt(f"set up the scene '{scene}' in front of the bench, then continue")

    def set_exposure(self, relative: float) -> float:
        """Exposure relative to the configured shutter time; returns the one applied."""
        relative = float(np.clip(relative, 1e-4, 1e4))
        if self.sim is not None:
            self.sim.exposure = relative
            self.exposure = relative
            return relative
        want = self._base_shutter_s * relative
        t = min(_SHUTTER_S, key=lambda s: abs(np.log(s / want)))
        for cam in (self.cameras.privacy, self.cameras.reference):
            cam.configure({"shutterspeed": _shutter_label(t)})
        self.exposure = t / self._base_shutter_s
        return self.exposure

    def capture(self, privacy_only: bool = False) -> PairedFrame:
        """One synchronised pair (the reference frame is dropped with ``privacy_only``)."""
        if self.sim is not None:
            self.sim.prepare_capture()
        pair = self.cameras.capture(self.timeout_s)
        if privacy_only:
            pair = PairedFrame(pair.privacy, None, pair.skew_s)
        return pair

    def mirror_state(self) -> dict:
        return {"voltages_v": self.mirror.get_voltages(), "amplitudes": self.mirror.amplitudes}

    def close(self) -> None:
        for dev in (self.cameras, self.stage, self.mirror):
            if dev is None:
                continue
            try:
                dev.close()
            except DeviceError as e:
                log.warning("closing %s: %s", type(dev).__name__, e)
        for fake in self._fakes:
            fake.close()
        self._fakes = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
