"""``rig``: drive the privacy-camera bench, or its device-level simulator (``--sim``).

Commands::

    rig config --out rig.yaml                 write the default rig config to edit
    rig info [--config rig.yaml] [--sim]      open every device and report it
    rig calibrate --sim --out DIR             dark, flat, registration, PSF, pokes, verify
    rig capture --sim --session NAME --frames N --out DIR [--privacy-only]
    rig mirror --sim --device-file F          put a device file (optics export-dm) on the mirror
    rig sessions DIR | rig export ... | rig dataset ...   (recorded sessions, see --help)

Every command takes ``--config FILE`` (a rig config, see ``rig config``), ``--set key=value``
overrides (e.g. ``--set sim.image_size_px=128``) and ``--sim`` (every device simulated).
Device errors end in one line and exit status 1; bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from optics.clikit import add_common, add_overrides, build_parser, run_cli

from .devices import DeviceError

log = logging.getLogger(__name__)


def _add_rig_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_common(p)
    p.add_argument("--config", metavar="FILE", help="rig config YAML (default: all simulated)")
    add_overrides(p, "sim.image_size_px=128")
    p.add_argument("--sim", action="store_true",
                   help="simulate every device (fake mirror library, virtual cameras, fake "
                        "APT stage on a pseudo-terminal)")
    p.add_argument("--yes", action="store_true",
                   help="real bench: do not wait for the operator between scenes")
    return p


def _rig_config(args):
    from .config import load_rig_config

    return load_rig_config(args.config, args.overrides, sim=args.sim)


def _open_rig(args):
    from .rig import Rig

    cfg = _rig_config(args)

    def prompt(msg):
        if args.yes:
            log.warning("operator: %s (--yes: continuing)", msg)
        else:
            input(f"{msg}; press Enter ")

    return Rig(cfg, prompt=prompt)


def cmd_config(args) -> int:
    from optics.configio import save_config

    cfg = _rig_config(args)
    print(save_config(cfg, args.out))
    return 0


def cmd_info(args) -> int:
    cfg = _rig_config(args)
    with _open_rig(args) as rig:
        m = rig.mirror
        print(f"mirror    {cfg.mirror.backend:4s} {getattr(m, 'resource', '')}: "
              f"{m.segment_count} segments, {m.voltage_min_v:g}..{m.voltage_max_v:g} V, "
              f"{m.n_modes} modes in [{m.amplitude_min:g}, {m.amplitude_max:g}]")
        for name, cam in (("privacy", rig.cameras.privacy),
                          ("reference", rig.cameras.reference)):
            info = getattr(cam, "info", {}) or {}
            print(f"{name:9s} {getattr(cfg, name + '_camera').backend:4s} serial {cam.serial}: "
                  f"{info.get('model', '?')}; settings {cam.settings}")
        if rig.stage is not None:
            print(f"stage     {cfg.stage.backend:4s} {rig.stage.name}: "
                  f"{rig.stage.position_mm:.4f} mm")
        else:
            print("stage     none (no phase diversity)")
        print(f"optics    {cfg.optics}; diversity {cfg.diversity_um_per_mm():.4f} um Z4 per mm")
    return 0


def cmd_calibrate(args) -> int:
    from calibration.pipeline import STEPS, CalibrationConfig, calibrate
    from calibration.report import write_report
    from optics.configio import apply_overrides, load_config, save_config

    ccfg = load_config(CalibrationConfig, args.calibration_config) \
        if args.calibration_config else CalibrationConfig()
    ccfg = apply_overrides(ccfg, args.calibration_set)
    steps = args.steps.split(",") if args.steps else list(STEPS)
    redo = args.redo.split(",") if args.redo else []
    target = None
    if args.target:
        from optics.coefficients import load_coefficients

        target = load_coefficients(args.target)
    out = Path(args.out)
    with _open_rig(args) as rig:
        save_config(rig.config, out / "rig.yaml")
        save_config(ccfg, out / "calibration-config.yaml")
        path = calibrate(rig, out, ccfg, redo=redo, steps=steps, target_um=target)
        summary = write_report(path, out, rig.config, simulated=rig.simulated)
    print(f"calibration: {path}")
    print(f"report:      {out / 'report.md'}")
    st = summary["steps"]
    if "registration" in st:
        print(f"registration rms {st['registration']['rms_error_px']:.3f} px")
    if "modes" in summary:
        print("mode  scale um/unit  sign  rotation deg")
        for k, v in summary["modes"].items():
            print(f"{k:5s} {v['scale_um']:13.4f} {v['sign']:+5d} {v['rotation_deg']:13.2f}")
    if "verify" in st:
        h = st["verify"]["history"][-1]
        print(f"verify: rms error {h['rms_error_um']:.4f} um, correlation "
              f"{h['correlation']:.4f} after {h['iteration']} correction(s)")
    if "simulation_truth_errors" in summary:
        t = summary["simulation_truth_errors"]
        print("vs hidden truth: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float)
                                               else f"{k} {v}" for k, v in t.items()
                                               if not isinstance(v, dict)))
    return 0


def _mirror_amplitudes(args):
    """(12,) amplitudes and a description from --device-file / --coefficients + --calibration."""
    import numpy as np

    from calibration.device_map import (
        load_calibration,
        load_device_file,
        noll_to_device,
        prototype_amplitudes,
    )

    if args.device_file:
        return load_device_file(args.device_file), None, str(args.device_file)
    if args.coefficients:
        if not args.calibration:
            raise ValueError("--coefficients needs --calibration (a rig calibrate output)")
        from optics.coefficients import load_coefficients

        cal = load_calibration(args.calibration)
        sol = noll_to_device(load_coefficients(args.coefficients), cal, clip=args.clip)
        log.info("residual the mirror cannot make: %.4f um RMS", sol.residual_rms_um)
        return sol.amplitudes, cal, str(args.coefficients)
    if args.prototype:
        return prototype_amplitudes(), None, "paper prototype preset"
    return np.zeros(12), None, "flat"


def _add_mirror_source(p):
    g = p.add_argument_group("mirror setting (default: flat)")
    g.add_argument("--device-file", metavar="FILE", help="device amplitudes (optics export-dm)")
    g.add_argument("--coefficients", metavar="FILE",
                   help="Noll coefficients (um OPD) to convert with --calibration")
    g.add_argument("--calibration", metavar="FILE", help="calibration.h5 or device-map JSON")
    g.add_argument("--prototype", action="store_true",
                   help="the paper's prototype amplitudes (Z4 -0.83, Z6 -0.31, ...)")
    g.add_argument("--clip", action="store_true",
                   help="clip out-of-range amplitudes (with a warning) instead of refusing")


def cmd_mirror(args) -> int:
    amps, _, source = _mirror_amplitudes(args)
    with _open_rig(args) as rig:
        v = rig.mirror.set_zernike(amps, clip=args.clip)
        print(f"mirror set from {source}: " + " ".join(
            f"Z{k + 4}={a:+.3f}" for k, a in enumerate(amps) if a))
        print(f"voltages {v.min():.1f}..{v.max():.1f} V")
        if args.hold:
            input("holding the setting; press Enter to relax and exit ")
        rig.mirror.relax()
    return 0


def cmd_capture(args) -> int:
    from captures.record import mirror_metadata, record_session
    from optics.configio import to_dict

    amps, cal, source = _mirror_amplitudes(args)
    out = Path(args.out)
    path = out / f"{args.session}.h5"
    with _open_rig(args) as rig:
        rig.mirror.set_zernike(amps, clip=args.clip)
        rig.show(args.scene)
        meta = {"session": args.session, "scene": args.scene, "mirror_source": source,
                "rig_config": to_dict(rig.config),
                "mirror": mirror_metadata(rig, cal, args.device_file),
                "simulated": rig.simulated, "privacy_only": args.privacy_only}
        if args.calibration:
            meta["calibration_file"] = str(args.calibration)
        stats = record_session(rig, path, args.frames, privacy_only=args.privacy_only,
                               metadata=meta, interval_s=args.interval_s, resume=args.resume,
                               progress=not args.no_progress)
        rig.mirror.relax()
    print(f"{stats.path}: {stats.frames} pair(s) in {stats.seconds:.1f} s "
          f"({stats.rate_hz:.2f} pairs/s), max trigger skew {stats.max_abs_skew_s * 1e3:.2f} ms"
          f"{'; reference branch not written' if args.privacy_only else ''}")
    if args.json:
        print(json.dumps({"path": str(stats.path), "frames": stats.frames,
                          "seconds": stats.seconds, "rate_hz": stats.rate_hz,
                          "max_abs_skew_s": stats.max_abs_skew_s}))
    return 0


def build_cli():
    parser, sub = build_parser("rig", __doc__.split("\n\n")[0] + "\n\n" +
                               __doc__.split("\n\n", 1)[1])
    p = _add_rig_args(sub.add_parser("config", help="write the rig config YAML to edit"))
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_config)

    p = _add_rig_args(sub.add_parser("info", help="open every device and report it"))
    p.set_defaults(func=cmd_info)

    p = _add_rig_args(sub.add_parser(
        "calibrate", help="measure the bench: dark, flat, registration, PSF, pokes, verify",
        description="Runs the calibration steps (each resumable: rerun with the same --out "
                    "to continue) and writes DIR/calibration.h5 plus a report with figures."))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--steps", metavar="LIST",
                   help="comma-separated subset of dark,flat,registration,psf,pokes,verify")
    p.add_argument("--redo", metavar="LIST", help="steps to run again even if done")
    p.add_argument("--target", metavar="FILE",
                   help="Noll coefficients (um) for the verification step (default: 0.8 x "
                        "the paper's prototype amplitudes)")
    p.add_argument("--calibration-config", metavar="FILE", help="CalibrationConfig YAML")
    add_overrides(p, "poke_amplitude=0.25 (CalibrationConfig)", flag="--calibration-set",
                  dest="calibration_set")
    p.set_defaults(func=cmd_calibrate)

    p = _add_rig_args(sub.add_parser(
        "capture", help="record synchronised frame pairs to HDF5",
        description="Records --frames pairs into OUT/SESSION.h5, each frame flushed as it "
                    "arrives (a killed capture keeps every completed frame). The reference "
                    "(identifiable) branch is written unless --privacy-only."))
    p.add_argument("--session", required=True, metavar="NAME")
    p.add_argument("--frames", type=int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--privacy-only", action="store_true",
                   help="never write the ground-truth (identifiable) branch to disk")
    p.add_argument("--scene", default="faces",
                   help="simulation scene: faces, checkerboard, pinhole, dark, folder:PATH")
    p.add_argument("--interval-s", type=float, default=0.0, help="pause between pairs")
    p.add_argument("--resume", action="store_true", help="append to an existing session")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="also print the stats as JSON")
    _add_mirror_source(p)
    p.set_defaults(func=cmd_capture)

    p = _add_rig_args(sub.add_parser("mirror", help="put a setting on the mirror"))
    _add_mirror_source(p)
    p.add_argument("--hold", action="store_true", help="keep it until Enter is pressed")
    p.set_defaults(func=cmd_mirror)

    from captures.cli import register

    register(sub)
    return parser


def main(argv=None) -> int:
    try:
        return run_cli(build_cli(), argv)
    except DeviceError as e:
        print(f"rig: device error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
