"""``rig``: the optical bench (deformable mirror, cameras, stages).

The bench commands arrive with their issue; today the tool only reports what is installed.
"""

from __future__ import annotations

from optics.clikit import add_common, build_parser, run_cli


def cmd_info(args) -> int:
    print("privlens rig: no bench commands are implemented yet (see the issue tracker)")
    return 0


def build_cli():
    parser, sub = build_parser("rig", "Drive the privacy-camera bench, or its simulator.")
    add_common(sub.add_parser("info", help="what the bench tool can do")).set_defaults(
        func=cmd_info)
    return parser


def main(argv=None) -> int:
    return run_cli(build_cli(), argv)
