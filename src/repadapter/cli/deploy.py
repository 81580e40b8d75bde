"""``repadapter merge``, ``export``, ``predict`` and ``convert``: from an adapter file to a deployed
model (`repadapter.export.deployed` builds it), its exported forms, its predictions, and adapter
files from the official code's checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from repadapter.cli.flags import add_base_flags, check_outputs
from repadapter.config import PLACEMENTS
from repadapter.errors import RepAdapterError

if TYPE_CHECKING:
    from repadapter.export.deployed import Deployed


def _deployed(args: argparse.Namespace) -> Deployed:
    """The model that ``--adapter`` folded into the base model of the base-model flags makes."""
    from repadapter.export.deployed import deployed_model

    return deployed_model(
        args.adapter,
        args.model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
    )


def _merge(args: argparse.Namespace) -> None:
    from repadapter.export.deployed import load_snippet
    from repadapter.files import save_tensor_file

    check_outputs(files=[args.out])
    deployed = _deployed(args)
    num_classes, kind = deployed.num_classes, deployed.task
    meta = {"architecture": args.model, "num_classes": str(num_classes), "merged_from": str(args.adapter)}
    save_tensor_file(args.out, deployed.model.state_dict(), meta)
    print(
        f"wrote {args.out}: a plain {args.model} {kind} model with {num_classes} classes, adapters folded in."
    )
    size = f" --img-size {args.img_size}" if args.img_size else ""
    print(f"  evaluate it with: repadapter eval --model {args.model}{size} --weights {args.out} --data ...")
    if kind == "classification":
        print("  or load every tensor of it (the trained head too) in Python:")
        for line in load_snippet(deployed.model, args.model, num_classes, args.img_size, args.out):
            print(f"    {line}")


def _export(args: argparse.Namespace) -> None:
    from repadapter.export.formats import export_onnx, export_torchscript
    from repadapter.provenance import provenance, write_result
    from repadapter.training.data.transforms import preprocessing

    if not (args.onnx or args.torchscript):
        raise RepAdapterError("give --onnx FILE and/or --torchscript FILE")
    check_outputs(files=[args.onnx, args.torchscript, args.json])
    made_by = provenance()
    deployed = _deployed(args).model
    size = tuple(preprocessing(deployed)["input_size"])
    diffs = {}
    if args.onnx:
        diff = diffs["onnx_max_abs_logit_diff"] = export_onnx(deployed, args.onnx, size, opset=args.opset)
        print(f"wrote {args.onnx}: onnxruntime vs PyTorch max |delta logits| = {diff:.2e}")
    if args.torchscript:
        diffs["torchscript_max_abs_logit_diff"] = export_torchscript(deployed, args.torchscript, size)
        diff = diffs["torchscript_max_abs_logit_diff"]
        print(f"wrote {args.torchscript}: TorchScript vs PyTorch max |delta logits| = {diff:.2e}")
    if args.json:
        print(f"wrote {write_result(args.json, {'export': {'model': args.model, **diffs}}, made_by)}")


def _predict(args: argparse.Namespace) -> None:
    from repadapter.export.deployed import merged_classifier
    from repadapter.export.predict import list_images, predict_images, read_class_names, write_predictions
    from repadapter.training import distributed
    from repadapter.training.data.transforms import eval_transform, preprocessing

    if (args.adapter is None) == (args.weights is None):
        raise RepAdapterError("give exactly one of --adapter (adapter file) or --weights (merged checkpoint)")
    images = list_images(args.images)
    if args.adapter is not None:
        deployed = _deployed(args)
        if deployed.task != "classification":
            raise RepAdapterError(
                f"{args.adapter} is a {deployed.task} adapter; predict handles image classifiers"
            )
        model, num_classes = deployed.model, deployed.num_classes
    else:
        model, num_classes = merged_classifier(args.weights, args.model, img_size=args.img_size)
    topk = min(5, num_classes) if args.topk is None else args.topk
    if not 1 <= topk <= num_classes:
        raise RepAdapterError(f"--topk {topk}: give 1 to {num_classes}, the model's number of classes")
    names = read_class_names(args.class_names, num_classes) if args.class_names else []
    ctx = distributed.setup(args.device)
    model.to(ctx.device).eval()
    transform = eval_transform(preprocessing(model, args.normalization))
    rows, bad = predict_images(
        model, images, Path(args.images), transform, topk, args.batch_size, ctx.device,
        args.on_bad_image, progress=not args.quiet,
    )  # fmt: skip
    if not rows:
        raise RepAdapterError(f"none of the {len(images)} image files under {args.images} could be decoded")
    write_predictions(args.out, rows, names)
    for name, reason in bad:
        print(f"skipped {name}: not a readable image ({reason})", file=sys.stderr)
    print(
        f"wrote {args.out}: top-{topk} of {num_classes} classes for {len(rows)} images"
        f"{f', {len(bad)} unreadable image(s) skipped' if bad else ''}"
    )


def _convert(args: argparse.Namespace) -> None:
    from repadapter.training.data.vtab import paper_scale
    from repadapter.tuner.convert import convert_official

    if args.scale == "paper":
        if not args.task:
            raise RepAdapterError(
                "--scale paper needs --task NAME (a VTAB-1k task) to pick the official value"
            )
        if not args.placement:
            raise RepAdapterError("--scale paper needs --placement attn|block: the official values differ")
        scale = paper_scale(args.task, args.placement)
    else:
        if args.task:
            raise RepAdapterError("--task picks the official scale; give it with --scale paper only")
        try:
            scale = float(args.scale)
        except ValueError:
            raise RepAdapterError(f"--scale {args.scale!r}: give a number or 'paper' (with --task)") from None
    path, config, num_classes = convert_official(args.official, args.model, scale, args.out, args.placement)
    print(
        f"wrote {path}: {args.model}, placement {config.placement}, dim {config.dim}, "
        f"groups {config.groups}, scale {config.scale:g}, {num_classes} classes "
        f"(from the official checkpoint {args.official})"
    )
    print(f"  evaluate it with: repadapter eval --model {args.model} --adapter {path} --data ...")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``merge``, ``export``, ``predict`` and ``convert``."""
    merge_cmd = commands.add_parser(
        "merge", help="fold an adapter file into its base model and write a plain timm checkpoint"
    )
    add_base_flags(merge_cmd)
    merge_cmd.add_argument("--adapter", required=True, help="adapter file (from train or save_adapter)")
    merge_cmd.add_argument("--out", required=True, help="output .safetensors file")
    merge_cmd.set_defaults(func=_merge, reads=("adapter", "checkpoint"), writes=("out",))

    export = commands.add_parser(
        "export", help="merge an adapter into its base model and export it to ONNX and/or TorchScript"
    )
    add_base_flags(export)
    export.add_argument("--adapter", required=True, help="adapter file (from train or save_adapter)")
    export.add_argument("--onnx", help="output .onnx file (dynamic batch; checked with onnxruntime)")
    export.add_argument("--torchscript", help="output TorchScript file (checked after reloading)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    export.add_argument(
        "--json", help="also write the measured differences, with provenance, to this JSON file"
    )
    export.set_defaults(func=_export, reads=("adapter", "checkpoint"), writes=("onnx", "torchscript", "json"))

    predict = commands.add_parser(
        "predict",
        help="top-k predictions of an adapter file or merged checkpoint on a folder of images, as CSV",
        description="Classify every image file under --images (recursively, sorted) with the base model "
        "and --adapter (merged before use) or a merged --weights checkpoint, preprocessed as eval does, "
        "in batches; write one CSV row per image: its path relative to --images, then class_k, name_k "
        "(with --class-names) and prob_k (softmax) for k = 1..K. Unreadable images are reported and "
        "skipped, or stop the run (--on-bad-image error).",
    )
    add_base_flags(predict)
    predict.add_argument("--adapter", help="adapter file to load onto the base model")
    predict.add_argument(
        "--weights",
        help="merged checkpoint (from repadapter merge), or the trained.safetensors of a run of a "
        "method without adapters, instead of an adapter file",
    )
    predict.add_argument("--images", required=True, help="folder of images (searched recursively)")
    predict.add_argument("--out", required=True, help="output CSV file")
    predict.add_argument("--topk", type=int, help="classes per image (default: 5, or all if fewer)")
    predict.add_argument("--class-names", help="text file with one class name per line, in class order")
    predict.add_argument(
        "--on-bad-image",
        choices=("skip", "error"),
        default="skip",
        help="an image that does not decode: report and skip it, or stop (default: %(default)s)",
    )
    predict.add_argument(
        "--normalization",
        default="model",
        choices=("model", "imagenet"),
        help="must match the training run's (default: %(default)s)",
    )
    predict.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(
        func=_predict, reads=("adapter", "weights", "checkpoint", "class_names", "images"), writes=("out",)
    )

    convert = commands.add_parser(
        "convert",
        help="turn a checkpoint of the official RepAdapter code into an adapter file",
        description="Read a checkpoint saved by github luogen1996/RepAdapter (torch.save of the adapter "
        "and head tensors of a timm ViT) without running code from it, and write the same adapters and "
        "head as a repadapter adapter file for --model. The scale s is not in the checkpoint: give the "
        "one it was trained with, or --scale paper --task NAME for the official per-task value.",
    )
    convert.add_argument("--official", required=True, help="the official checkpoint (.pt)")
    convert.add_argument(
        "--model", required=True, help="timm ViT it was trained on (e.g. vit_base_patch16_224)"
    )
    convert.add_argument(
        "--scale", required=True, help="scale s it was trained with, or 'paper' (with --task)"
    )
    convert.add_argument("--task", help="with --scale paper: the VTAB-1k task, whose official scale is used")
    convert.add_argument(
        "--placement",
        choices=PLACEMENTS,
        help="attn (official repattn) or block (repblock); read from the file",
    )
    convert.add_argument("--out", required=True, help="output adapter file (.safetensors)")
    convert.set_defaults(func=_convert, reads=("official",), writes=("out",))
