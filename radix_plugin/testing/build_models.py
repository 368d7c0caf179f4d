"""Build the offline test models: `python -m radix_plugin.testing.build_models [names...]`.

`make setup` runs this so the first test run does not pay for the build. Prints each model's
directory on stdout (one per line, scriptable) and timings on stderr; already-built models
are reused, not rebuilt. ``--quiet`` (`make demo`) names only the models it had to build, so
a demo after set-up prints nothing but the demo.
"""

from __future__ import annotations

import argparse
import sys
import time

from radix_plugin.testing.models import all_model_names, get_model_path, model_is_built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the offline test models.")
    parser.add_argument("names", nargs="*", help=f"subset of {all_model_names()} (default: all)")
    parser.add_argument("--quiet", action="store_true", help="print only the models built now")
    args = parser.parse_args(argv)
    for name in args.names or all_model_names():
        start = time.perf_counter()
        try:
            built = model_is_built(name)
            path = get_model_path(name)
        except ValueError as exc:
            parser.error(str(exc))
        if args.quiet and built:
            continue
        if not args.quiet:
            print(path, flush=True)
        print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
