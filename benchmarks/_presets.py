"""Command line shared by the preset-driven benchmarks: --quick / --full, each value overridable."""

import argparse
from pathlib import Path


def parse_setting(description: str, presets: dict, name: str, grids: dict[str, type]):
    """Parse the command line into ``(setting, output path)``.

    ``grids`` names the preset's list-valued keys (with their element type) besides ``seeds``;
    every other preset key is a single integer that may be overridden.
    """
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="preset", const="quick")
    mode.add_argument("--full", action="store_const", dest="preset", const="full")
    parser.add_argument("--seeds", type=int, nargs="+")
    for key, kind in grids.items():
        parser.add_argument(f"--{key}", type=kind, nargs="+")
    for key in ("n_train", "n_test", "steps", "batch_size", "width"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int)
    parser.add_argument("--solver-steps", type=int, default=2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out")
    parser.set_defaults(preset="quick")
    args = parser.parse_args()
    setting = dict(presets[args.preset])
    for key in setting:
        if getattr(args, key) is not None:
            setting[key] = getattr(args, key)
    setting |= {"preset": args.preset, "solver": "rk4", "solver_steps": args.solver_steps,
                "divergence": "exact", "validation_fraction": args.validation_fraction,
                "accelerator": args.accelerator}  # fmt: skip
    out = Path(args.out or Path(__file__).parent / "results" / f"{name}_{args.preset}.json")
    return setting, out
