"""The ``interpkit`` command line. Bad input ends with exit code 2 and one line, never a traceback;
``explain`` ends with 1 when some images failed or were skipped (the others are done)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from ..errors import InputError, InterpkitError
from ..version import __version__
from .arguments import comma_names, refuse_to_replace

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own errors: one line, exit 2
        raise SystemExit(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _plugins(_args: argparse.Namespace) -> None:
    from ..registry import registry

    reg = registry()
    print("plugins loaded:")
    for source in reg.plugins:
        print(f"  {source}")
    for kind, table in reg.entries.items():
        if not table:
            continue
        print(f"{kind}:")
        for name in sorted(table):
            print(f"  {name:<28s} {reg.sources[kind][name]}")
    if reg.failures:
        print("plugins that failed to load:")
        for source, reason in reg.failures:
            print(f"  {source}: {reason}")


def _view(args: argparse.Namespace) -> None:
    from ..viewer import serve, write_site
    from ..viewer.serve import check_port

    if args.serve:
        check_port(args.port)  # before the viewer is written
    if args.stores:
        page = write_site(args.stores, args.out, progress=not args.no_progress)
        print(f"viewer written to {page}")
    elif not args.serve:
        raise InputError("give one or more stores to view, or --serve to serve an existing viewer")
    if args.serve:
        serve(args.out, args.port)


def _zoo(_args: argparse.Namespace) -> None:
    from ..registry import get_weights, list_models

    for name in list_models():
        try:
            weights = get_weights(name)
            metrics = weights.meta["metrics"]
            status = (f"{weights.name}: val {metrics['val_accuracy']:.1%}, test {metrics['test_accuracy']:.1%}, "
                      f"classes {', '.join(weights.meta['categories'])}")
        except InterpkitError as error:
            status = f"no bundled weights ({error})"
        print(f"{name:<22s} {status}")


def _train(args: argparse.Namespace) -> None:
    from ..train import TrainConfig, train_models

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         augment=not args.no_augment, patience=args.patience or None)
    names = comma_names(args.models) or []
    rows = train_models(names, args.out, config, data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir,
                        resume=args.resume, backbone=args.backbone, progress=not args.no_progress,
                        command="interpkit " + shlex.join(sys.argv[1:]))
    print((Path(args.out) / "results.md").read_text(), end="")
    print(f"weights, descriptions, confusion matrices and results tables written to {args.out}/ ({len(rows)} models)")


EXIT_INCOMPLETE = 1  # some inputs failed or were skipped; the rest were done


def _explain(args: argparse.Namespace) -> int:
    if args.data is not None:
        return _explain_dataset(args)
    if not args.images:
        raise InputError("give image files, or --data FOLDER to explain a whole dataset")
    from .explain_files import explain_files

    run = explain_files(args.images, args.out, model=args.model, checkpoint=args.checkpoint, method=args.method,
                        layer=args.layer, target=args.target, device=args.device, overwrite=args.overwrite,
                        progress=not args.no_progress)
    print(run.summary())
    if run.out.exists():
        print(f"manifest: {run.out / 'manifest.csv'} and manifest.json")
    return 0 if run.complete else EXIT_INCOMPLETE


def _explain_dataset(args: argparse.Namespace) -> int:
    import os

    import torch.distributed as dist

    from ..dataset import explain_dataset
    from .commands import load_model, make_explainer, parse_target

    if args.images:
        raise InputError("give image files or --data, not both")
    if args.overwrite:
        raise InputError("--overwrite applies to image files; a store is continued with --resume, or written to a "
                         "new --out folder")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # started by torchrun
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    network, transform, categories = load_model(args.model, args.checkpoint, args.device)
    target = "labels" if args.target == "labels" else parse_target(args.target, categories)
    store = explain_dataset(make_explainer(network, args.method, args.layer), args.data, args.out, target=target,
                            metrics=comma_names(args.metrics) or [], batch_size=args.batch_size, shard_size=args.shard_size,
                            num_workers=args.workers,
                            dtype=args.dtype, precision=args.precision, transform=transform, classes=categories,
                            resume=args.resume,
                            progress=not args.no_progress)
    if not dist.is_initialized() or dist.get_rank() == 0:
        failed = store.failures
        print(f"{len(store) - len(failed)} of {len(store)} samples explained into {args.out}/ "
              f"(read it with interpkit.read_store); {len(failed)} failed")
        for failure in failed[:10]:
            print(f"  failed: index {failure['index']}: {failure['reason']}")
    return EXIT_INCOMPLETE if store.failures else 0


def _feature_maps(args: argparse.Namespace) -> None:
    from .commands import feature_map_images

    written = feature_map_images(args.images, args.out, model=args.model, checkpoint=args.checkpoint,
                                 layers=args.layers, device=args.device, overwrite=args.overwrite)
    print(f"wrote {len(written)} files to {args.out}/")


def _visualise(args: argparse.Namespace) -> None:
    from .arguments import index_ranges
    from .commands import visualise_channels

    paths = visualise_channels(args.out, model=args.model, checkpoint=args.checkpoint, layer=args.layer,
                               channels=index_ranges(args.channels, "--channels"), size=args.size, steps=args.steps,
                               seed=args.seed, max_batch=args.batch_size, device=args.device,
                               progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {len(paths) - 1} images and {paths[-1]} to {args.out}/")


def _evaluate(args: argparse.Namespace) -> None:
    import torch

    from ..data import read_image
    from ..dataset.evaluation import evaluate_explainers
    from .commands import load_model
    from .evaluation import dataset_images, format_rows, table_paths, write_rows

    refuse_to_replace(table_paths(args.out), args.overwrite)
    network, transform, _ = load_model(args.model, args.checkpoint, args.device)
    files = dataset_images(args.split, args.images, args.data_dir, args.limit)
    readable, unreadable = [], []
    for file in files:
        try:
            readable.append(transform(read_image(file)))
        except InputError as error:  # one broken image does not end the run: it is named and left out
            unreadable.append(f"{file} ({error})")
    for line in unreadable:
        print(f"skipped: {line}", file=sys.stderr)
    if not readable:
        raise InputError(f"none of the {len(files)} images could be read")
    images = torch.stack(readable).to(next(network.parameters()).device)
    rows = evaluate_explainers(network, images, comma_names(args.methods) or [], comma_names(args.metrics) or [], args.batch_size,
                               progress=not args.no_progress)
    csv_path, json_path = write_rows(rows, args.out)
    print(format_rows(rows))
    print(f"{len(readable)} images ({len(unreadable)} unreadable, skipped); table written to {csv_path} and {json_path}")


def _report(args: argparse.Namespace) -> None:
    from ..report import build_report

    models = comma_names(args.models)
    if models == []:
        raise InputError("--models names no model; give zoo names separated by commas, or drop --models")
    metrics = comma_names(args.metrics)
    if metrics == []:
        raise InputError("--metrics names no metric; give registered metric names separated by commas, or drop --metrics")
    page = build_report(args.out, models=models, data_dir=args.data_dir, device=args.device,
                        progress=not args.no_progress, metrics=metrics)
    print(f"report written to {page}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="interpkit", description="Interpretability for PyTorch models: explain, train, report.")
    parser.add_argument("--version", action="version", version=f"interpkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    report = commands.add_parser("report", help="reproduce the study as a web page (bundled models and data)")
    report.add_argument("--out", default="interpkit-report", help="output directory (default: interpkit-report)")
    report.add_argument("--models", help="comma-separated zoo models (default: the three Caltech CNNs and VGG19)")
    report.add_argument("--data-dir", help="folder with split.json / caltech5_split.json (default: bundled split)")
    report.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    report.add_argument("--metrics", help="comma-separated metrics for the faithfulness table (default: deletion, "
                        "insertion, average_drop, faithfulness_correlation, sparseness, complexity)")
    report.add_argument("--no-progress", action="store_true", help="no progress bars")
    report.set_defaults(run=_report)

    explain = commands.add_parser("explain", help="explain image files, or a whole dataset with --data")
    explain.add_argument("images", nargs="*", help="image files (any format PIL reads)")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a zoo model with bundled weights, e.g. caltech5_arch2")
    source.add_argument("--checkpoint", help="weights written by 'interpkit train' (NAME.pt beside NAME.json)")
    explain.add_argument("--method", default="gradcam", help="registered explainer (see 'interpkit plugins')")
    explain.add_argument("--layer", help="dotted layer name (default: the method's own choice)")
    explain.add_argument("--target", default=None, help="class index, class name, 'all' (default: top-1)")
    explain.add_argument("--out", required=True, help="output directory (outputs mirror the inputs' folders)")
    explain.add_argument("--overwrite", action="store_true", help="replace existing output files")
    explain.add_argument("--device", default="cpu")
    explain.add_argument("--no-progress", action="store_true", help="no progress bar")
    dataset = explain.add_argument_group("a whole dataset (an index-keyed store; torchrun runs it on N processes)")
    dataset.add_argument("--data", help="image folder (class subfolders give labels) or caltech5:SPLIT")
    dataset.add_argument("--resume", action="store_true", help="continue the store in --out")
    dataset.add_argument("--metrics", help="comma-separated metrics computed on the same batches")
    dataset.add_argument("--batch-size", type=int, default=32)
    dataset.add_argument("--shard-size", type=int, default=256, help="samples per stored shard (default: 256)")
    dataset.add_argument("--workers", type=int, default=2, help="DataLoader decoding processes (default: 2)")
    dataset.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored maps")
    dataset.add_argument("--precision", choices=["bfloat16", "float16"], help="mixed precision (autocast)")
    explain.set_defaults(run=_explain)

    features = commands.add_parser("feature-maps", help="draw the feature maps of images")
    features.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    weights = features.add_mutually_exclusive_group(required=True)
    weights.add_argument("--model", help="a zoo model with bundled weights, e.g. caltech5_arch2")
    weights.add_argument("--checkpoint", help="weights written by 'interpkit train' (NAME.pt beside NAME.json)")
    features.add_argument("--layers", help="comma-separated dotted layer names (default: every Conv2d)")
    features.add_argument("--out", required=True, help="output directory")
    features.add_argument("--overwrite", action="store_true", help="replace the feature maps of an earlier run")
    features.add_argument("--device", default="cpu")
    features.set_defaults(run=_feature_maps)

    visualise = commands.add_parser("visualise", help="images optimised to excite channels of a layer")
    weights = visualise.add_mutually_exclusive_group(required=True)
    weights.add_argument("--model", help="a zoo model with bundled weights, e.g. caltech5_arch1")
    weights.add_argument("--checkpoint", help="weights written by 'interpkit train' (NAME.pt beside NAME.json)")
    visualise.add_argument("--layer", required=True, help="dotted layer name, e.g. features.4")
    visualise.add_argument("--channels", required=True, help="channels to visualise: indices and ranges, e.g. 0-15")
    visualise.add_argument("--out", required=True, help="directory for unit_*.png and contact_sheet.png")
    visualise.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    visualise.add_argument("--steps", type=int, default=512, help="optimisation steps (default: 512)")
    visualise.add_argument("--seed", type=int, default=0)
    visualise.add_argument("--batch-size", type=int, default=64, help="images optimised together (default: 64)")
    visualise.add_argument("--overwrite", action="store_true", help="replace the images of an earlier run")
    visualise.add_argument("--device", default="cpu")
    visualise.add_argument("--no-progress", action="store_true", help="no progress bar")
    visualise.set_defaults(run=_visualise)

    evaluate = commands.add_parser("evaluate", help="score explainers with faithfulness metrics over a dataset")
    weights = evaluate.add_mutually_exclusive_group(required=True)
    weights.add_argument("--model", help="a zoo model with bundled weights, e.g. caltech5_arch1")
    weights.add_argument("--checkpoint", help="weights written by 'interpkit train' (NAME.pt beside NAME.json)")
    evaluate.add_argument("--methods", default="gradcam,guided_backprop", help="comma-separated explainers")
    evaluate.add_argument("--metrics", default="deletion,insertion,average_drop", help="comma-separated metrics")
    evaluate.add_argument("--split", default="test", help="split of the canonical set (default: test)")
    evaluate.add_argument("--data-dir", help="folder with split.json / caltech5_split.json (default: bundled split)")
    evaluate.add_argument("--images", help="a folder of images to use instead of the canonical split")
    evaluate.add_argument("--limit", type=int, help="use the first N images only")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--out", required=True, help="directory for evaluation.csv and evaluation.json")
    evaluate.add_argument("--overwrite", action="store_true", help="replace the tables of an earlier run")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    train = commands.add_parser("train", help="train zoo models on the canonical split")
    train.add_argument("--models", default="caltech5_arch1,caltech5_arch2,caltech5_arch3",
                       help="comma-separated zoo models (default: the three Caltech CNNs)")
    train.add_argument("--out", required=True, help="directory for weights, descriptions and results")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--patience", type=int, default=25, help="early stopping patience in epochs (0: off)")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--data-dir", help="folder with split.json / caltech5_split.json (default: bundled split)")
    train.add_argument("--checkpoint-dir", help="write a checkpoint per model after every epoch")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoints in --checkpoint-dir")
    train.add_argument("--backbone", default="IMAGENET1K_V1", help="VGG19 ImageNet weights: IMAGENET1K_V1 or a file")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=_train)

    view = commands.add_parser("view", help="a browsable static site over explained-dataset stores")
    view.add_argument("stores", nargs="*", help="store folders written by 'interpkit explain --data' (same data)")
    view.add_argument("--out", required=True, help="folder for the site (index.html opens from disk)")
    view.add_argument("--serve", action="store_true", help="then serve it on http://127.0.0.1:PORT/")
    view.add_argument("--port", type=int, default=8000, help="port for --serve (default: 8000)")
    view.add_argument("--no-progress", action="store_true", help="no progress bar")
    view.set_defaults(run=_view)

    commands.add_parser("zoo", help="list zoo models and their weights").set_defaults(run=_zoo)
    commands.add_parser("plugins", help="list plugins, their explainers, and failures").set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            return EXIT_BAD_INPUT
        return int(stop.code or 0)
    run: Callable[[argparse.Namespace], int | None] = args.run
    try:
        code = run(args)
    except (InterpkitError, OSError) as error:
        print(f"interpkit: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (MemoryError, RuntimeError) as error:  # torch's allocators raise RuntimeError (CUDA's a subclass)
        if not isinstance(error, MemoryError) and not any(
                words in str(error) for words in ("out of memory", "can't allocate memory", "not enough memory")):
            raise
        print(f"interpkit: error: out of memory ({_one_line(error)[:160]}); ask for smaller sizes or batches",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interpkit: interrupted", file=sys.stderr)
        return 130
    return code or 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
