"""python -m training: train, evaluate and export bridge variants into a model repository."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.variants import BROADCAST_METHODS, VARIANTS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train bridge variants and export them as versioned SavedModels.",
    )
    parser.add_argument("--variant", required=True, choices=[*VARIANTS, "all"])
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (offline, default), mnist, fashion_mnist, cifar10, or folder:PATH",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository")
    parser.add_argument(
        "--epochs", type=int, default=15, help="upper bound; early stopping ends sooner"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="per replica")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience, epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--broadcast",
        choices=BROADCAST_METHODS,
        default="resize",
        help="global_context: how the 1x1 context returns to the map's size",
    )
    parser.add_argument("--name", help="model name in the repository (one variant only)")
    parser.add_argument("--limit", type=int, help="use at most this many training images")
    parser.add_argument("--image-size", type=int, default=32, help="side for folder: data sets")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        help="split the CPU into N logical devices and mirror over them",
    )
    parser.add_argument("--no-report", action="store_true", help="skip models/REPORT.md")
    parser.add_argument(
        "--skip-if-present",
        action="store_true",
        help="do nothing when the repository already holds a model version",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args(argv)
    if args.name and args.variant == "all":
        parser.error("--name names one model; it cannot be used with --variant all")
    for option in ("epochs", "batch_size", "cpu_devices", "image_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


# `all` trains in this order (seconds each on 2 cores, digits): a service polling the
# repository serves the first model within half a minute instead of after flatten's 40 s.
CHEAPEST_FIRST = ("gap", "gmp", "residual_gap", "global_context", "conv_pool", "flatten")
assert sorted(CHEAPEST_FIRST) == sorted(VARIANTS)


def model_name(variant: str, broadcast: str) -> str:
    """global_context keeps its plain name for the default broadcast, else gains a suffix."""
    if variant == "global_context" and broadcast != "resize":
        return f"{variant}_{broadcast}"
    return variant


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.skip_if_present and _has_models(args.out):
        print(f"models: {args.out}/ already holds models; nothing to train (--skip-if-present)")
        return 0
    from training.distribute import select_strategy

    # The strategy must exist before any other TensorFlow work (logical devices, TF_CONFIG).
    strategy = select_strategy(args.cpu_devices)

    from training.data import DatasetUnavailableError, load_dataset
    from training.export import export_model, make_card
    from training.report import write_report
    from training.train import TrainConfig, train_variant

    try:
        dataset = load_dataset(args.dataset, args.seed, args.limit, args.image_size)
    except (DatasetUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    variants = list(CHEAPEST_FIRST) if args.variant == "all" else [args.variant]
    rows = []
    for variant in variants:
        options = {"broadcast": args.broadcast} if variant == "global_context" else {}
        config = TrainConfig(
            variant=variant,
            options=options,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            patience=args.patience,
            seed=args.seed,
            verbose=0 if args.quiet else "auto",
        )
        print(f"== {variant}: {dataset.name} {dataset.input_shape}, {len(dataset.train)} images")
        result = train_variant(dataset, config, strategy)
        card = make_card(args.name or model_name(variant, args.broadcast), dataset, config, result)
        path = export_model(result.model, card, args.out, dataset.test.images[:16])
        rows.append((card, result, path))
    print_summary(rows)
    if not args.no_report:
        print(f"\nwrote {write_report(args.out)}")
    return 0


def _has_models(repository: Path) -> bool:
    from convbridge.layout import list_models, list_versions

    return any(list_versions(repository / name) for name in list_models(repository))


def print_summary(rows: list[tuple]) -> None:
    header = (
        f"{'model':<24}{'params':>11}{'epochs':>8}{'accuracy':>10}{'loss':>9}{'seconds':>9}  path"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for card, result, path in rows:
        print(
            f"{card.name:<24}{card.parameters:>11,}{result.epochs_run:>8}"
            f"{result.accuracy:>10.4f}{result.loss:>9.4f}{result.seconds:>9.1f}  {path}"
        )


if __name__ == "__main__":
    sys.exit(main())
