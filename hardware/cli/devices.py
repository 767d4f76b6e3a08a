"""``rig config | info | mirror``: the devices themselves."""

from __future__ import annotations

from hardware.cli.common import (
    add_mirror_source,
    add_rig_args,
    mirror_amplitudes,
    open_rig,
    rig_config,
)
from optics.kit.config import save_config

__all__ = ["register"]


def cmd_config(args) -> int:
    cfg = rig_config(args)
    print(save_config(cfg, args.out))
    return 0


def cmd_info(args) -> int:
    cfg = rig_config(args)
    with open_rig(args) as rig:
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


def cmd_mirror(args) -> int:
    amps, _, source = mirror_amplitudes(args)
    with open_rig(args) as rig:
        v = rig.mirror.set_zernike(amps, clip=args.clip)
        print(f"mirror set from {source}: " + " ".join(
            f"Z{k + 4}={a:+.3f}" for k, a in enumerate(amps) if a))
        print(f"voltages {v.min():.1f}..{v.max():.1f} V")
        if args.hold:
            input("holding the setting; press Enter to relax and exit ")
        rig.mirror.relax()
    return 0


def register(sub) -> None:
    p = add_rig_args(sub.add_parser("config", help="write the rig config YAML to edit"))
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_config)

    p = add_rig_args(sub.add_parser("info", help="open every device and report it"))
    p.set_defaults(func=cmd_info)

    p = add_rig_args(sub.add_parser("mirror", help="put a setting on the mirror"))
    add_mirror_source(p)
    p.add_argument("--hold", action="store_true", help="keep it until Enter is pressed")
    p.set_defaults(func=cmd_mirror)
