"""``deid``: face data, heatmap regressor and de-identification generator.

The stage-2 commands arrive with their issues; today the tool only reports what is installed.
"""

from __future__ import annotations

from optics.clikit import add_common, build_parser, run_cli


def cmd_info(args) -> int:
    import torch

    print(f"privlens deid: torch {torch.__version__}, "
          f"devices: cpu{', cuda' if torch.cuda.is_available() else ''}")
    print("no de-identification commands are implemented yet (see the issue tracker)")
    return 0


def build_cli():
    parser, sub = build_parser("deid", "Face data, heatmap regressor and de-identification.")
    add_common(sub.add_parser("info", help="versions and devices")).set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    return run_cli(build_cli(), argv)
