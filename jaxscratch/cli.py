"""The ``jaxscratch`` command: ``jaxscratch gradcheck`` (the gradient oracle over the registry)."""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxscratch.gradcheck import check_registry, format_reports

    reports = check_registry(args.ops or None, seed=args.seed)
    if args.ops and not reports:
        print(f"jaxscratch gradcheck: no registered op named {args.ops}", file=sys.stderr)
        return 2
    print(format_reports(reports))
    return 0 if all(r.passed for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxscratch", description="Deep Learning from Scratch in JAX, gradients proven."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser(
        "gradcheck",
        help="check every registered op's hand-derived backward pass against jax.vjp and finite differences",
    )
    g.add_argument("ops", nargs="*", help="only these registry names (default: all)")
    g.add_argument("--seed", type=int, default=0, help="seed of the oracle examples")
    g.set_defaults(func=_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxscratch`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
