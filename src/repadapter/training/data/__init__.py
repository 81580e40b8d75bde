"""Data: VTAB-1k, the few-shot fine-grained layout, users' folders and CSVs, preprocessing;
ADE20K and image/mask folders for segmentation; clip lists for video."""

from __future__ import annotations

from repadapter.errors import RepAdapterError
from repadapter.training.data.fewshot import load_fewshot_task
from repadapter.training.data.folders import load_csv_folder, load_image_folder
from repadapter.training.data.lists import ImageListDataset, Sample, TaskData
from repadapter.training.data.vtab import GROUPS, VTAB_TASKS, load_vtab_task, paper_scale

# Each data kind and the kind of task (``--task``) it holds.
DATA_KINDS = {
    "vtab": "classification",
    "fewshot": "classification",
    "folder": "classification",
    "csv": "classification",
    "ade20k": "segmentation",
    "masks": "segmentation",
    "videos": "video",
    "imagenet": "classification",
    "imagenet-v2": "classification",
    "imagenet-sketch": "classification",
    "imagenet-a": "classification",
    "imagenet-r": "classification",
}
# Kinds read at a number of shots per class (--shots, --fewshot-seed).
SHOT_KINDS = ("fewshot", "imagenet")
FEWSHOT_SHOTS = 1  # the few-shot layout's shots when --shots is not given


def _parse(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in DATA_KINDS or not path:
        raise RepAdapterError(
            f"data spec {spec!r} is not 'kind:path' with kind in {tuple(DATA_KINDS)}, "
            "e.g. vtab:/data/vtab-1k/cifar, folder:/data/my_images, imagenet:/data/ILSVRC2012, "
            "ade20k:/data/ADEChallengeData2016 or videos:/data/hmdb51"
        )
    return kind, path


def data_task(spec: str) -> str:
    """The kind of task (``--task`` value) that the data spec ``spec`` holds."""
    return DATA_KINDS[_parse(spec)[0]]


def shots_for(spec: str, shots: int | None) -> int | None:
    """The shots per class that ``spec`` is read at: ``shots`` if given, else 1 for the few-shot
    layout and every training image (None) for ImageNet."""
    kind = _parse(spec)[0]
    return FEWSHOT_SHOTS if shots is None and kind == "fewshot" else shots


def load_task(
    spec: str, shots: int | None = None, fewshot_seed: int = 0, split: str | None = None
) -> TaskData:
    """Load ``"kind:path"``: ``vtab:<root>/<task>``, ``fewshot:<root>/<dataset>``,
    ``folder:<root>`` (ImageFolder), ``csv:<root>``, ``imagenet:<root>`` (ILSVRC-2012) and the
    test-only ``imagenet-v2:``, ``imagenet-sketch:``, ``imagenet-a:``, ``imagenet-r:<root>``;
    ``ade20k:<root>`` (the released ADEChallengeData2016 layout) or ``masks:<root>``
    (image/mask folders) for segmentation; ``videos:<root>`` (clip list files) for video.
    ``shots`` (see `shots_for`) and ``fewshot_seed`` apply to the few-shot layout and ImageNet;
    ``split`` names the one split the caller needs, for kinds that can then skip the others."""
    kind, path = _parse(spec)
    if kind == "imagenet":
        from repadapter.training.data.imagenet import load_imagenet

        return load_imagenet(path, shots_for(spec, shots), fewshot_seed, split)
    if kind.startswith("imagenet-"):
        from repadapter.training.data.imagenet import load_imagenet_variant

        return load_imagenet_variant(kind, path)
    if kind == "ade20k":
        from repadapter.training.data.segmentation import load_ade20k

        return load_ade20k(path)
    if kind == "masks":
        from repadapter.training.data.segmentation import load_mask_folder

        return load_mask_folder(path)
    if kind == "videos":
        from repadapter.training.data.video import load_video_list_task

        return load_video_list_task(path)
    if kind == "vtab":
        return load_vtab_task(path)
    if kind == "fewshot":
        return load_fewshot_task(path, FEWSHOT_SHOTS if shots is None else shots, fewshot_seed)
    if kind == "folder":
        return load_image_folder(path)
    return load_csv_folder(path)


__all__ = [
    "DATA_KINDS",
    "GROUPS",
    "SHOT_KINDS",
    "VTAB_TASKS",
    "ImageListDataset",
    "Sample",
    "TaskData",
    "data_task",
    "load_task",
    "load_vtab_task",
    "paper_scale",
    "shots_for",
]
