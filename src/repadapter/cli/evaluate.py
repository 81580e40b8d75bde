"""``repadapter eval``: the scores of an adapter file or a merged checkpoint on one or more data sets."""

from __future__ import annotations

import argparse

from repadapter.cli.flags import add_base_flags, add_data_flags, check_outputs, non_negative, positive
from repadapter.errors import RepAdapterError


def _eval(args: argparse.Namespace) -> None:
    import torch

    from repadapter.export.deployed import adapted_model, check_model_kind, weights_model
    from repadapter.files import read_adapter_file, read_tensor_file_with_metadata
    from repadapter.provenance import provenance, write_result
    from repadapter.training import distributed
    from repadapter.training.config import resolve_config
    from repadapter.training.data import data_task, load_task
    from repadapter.training.tasks import task_kind
    from repadapter.training.trainer import evaluate

    if (args.adapter is None) == (args.weights is None):
        raise RepAdapterError("give exactly one of --adapter (adapter file) or --weights (merged checkpoint)")
    check_outputs(files=[args.json])
    made_by = provenance()
    # every data set's lists, labels and images, before anything is scored
    tasks = [(spec, load_task(spec, args.shots, args.fewshot_seed, args.split)) for spec in args.data]
    for spec, task in tasks[1:]:
        first, first_task = tasks[0]
        if data_task(spec) != data_task(first) or task.num_classes != first_task.num_classes:
            raise RepAdapterError(
                f"--data {spec} holds a {data_task(spec)} task of {task.num_classes} classes but "
                f"--data {first} one of {first_task.num_classes}: one model scores data sets of the same "
                "kind and classes; evaluate them in separate runs"
            )
    samples = {spec: task.split(args.split) for spec, task in tasks}
    num_classes = tasks[0][1].num_classes
    cfg = resolve_config(
        task=data_task(args.data[0]),
        model=args.model,
        pretrained=args.pretrained and args.weights is None,
        checkpoint=args.checkpoint if args.weights is None else None,
        img_size=args.img_size,
        drop_path=0.0,
        eval_batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    kind = task_kind(cfg.task)
    if args.adapter is not None:
        file = read_adapter_file(args.adapter)
        check_model_kind(file, args.model)
    else:
        weights = read_tensor_file_with_metadata(args.weights, "merged checkpoint (--weights)")
    ctx = distributed.setup(cfg.device)
    if args.adapter is not None:
        model = adapted_model(
            file,
            args.model,
            num_classes=num_classes,
            task=cfg.task,
            pretrained=cfg.pretrained,
            checkpoint=cfg.checkpoint,
            img_size=args.img_size,
        )
    else:
        model = weights_model(
            args.weights, args.model, num_classes, task=cfg.task, img_size=args.img_size, file=weights
        )
    model.to(ctx.device).eval()
    prep = kind.preprocessing(model, args.normalization)
    records = []
    for spec, task in tasks:
        with torch.inference_mode():
            scores = evaluate(model, samples[spec], num_classes, prep, cfg, ctx, task.scored_classes)
        among = f", argmax among its {len(task.scored_classes)} classes" if task.scored_classes else ""
        shown = ", ".join(f"{name} {100 * value:.2f}%" for name, value in scores.items())
        print(
            f"{task.name} {args.split}: {shown} ({len(samples[spec])} samples{among}, "
            f"normalization={args.normalization})"
        )
        records.append(
            {
                "name": task.name,
                "data": spec,
                "split": args.split,
                "metric": kind.metric,
                "score": 100 * scores[kind.metric],
                "scores_percent": {name: 100 * value for name, value in scores.items()},
                "samples": len(samples[spec]),
                "scored_classes": list(task.scored_classes) or None,
            }
        )
    distributed.teardown()
    if args.json:
        settings = {"model": args.model, "adapter": args.adapter, "weights": args.weights}
        path = write_result(
            args.json,
            {"eval": {**settings, "normalization": args.normalization}, "results": records},
            made_by,
        )
        print(f"wrote {path}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``eval``."""
    evaluate = commands.add_parser(
        "eval", help="scores (accuracy; mIoU and pixel accuracy) of an adapter file or merged checkpoint"
    )
    add_base_flags(evaluate)
    add_data_flags(evaluate, several=True)
    evaluate.add_argument("--adapter", help="adapter file to load onto the base model")
    evaluate.add_argument(
        "--weights",
        help="merged checkpoint (from repadapter merge), or the trained.safetensors of a run of a "
        "method without adapters, instead of an adapter file",
    )
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    evaluate.add_argument(
        "--normalization",
        default="model",
        choices=("model", "imagenet"),
        help="must match the training run's (default: %(default)s)",
    )
    evaluate.add_argument(
        "--batch-size", type=positive, default=256, help="evaluation batch (default: %(default)s)"
    )
    evaluate.add_argument(
        "--workers", type=non_negative, default=4, help="data-loading workers (default: %(default)s)"
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    evaluate.add_argument(
        "--json", help="also write the scores here: one record per data set (name, metric, score in percent)"
    )
    evaluate.set_defaults(func=_eval, reads=("data", "adapter", "weights", "checkpoint"), writes=("json",))
