"""Labelled clip lists (SSv2 / HMDB51 / mmaction style) and serving their frames.

A list file has one clip per line, ``path label`` or mmaction's rawframe form
``path total_frames label``; ``path`` (relative to the list's root) is a folder of frames
(images, in the order of their sorted names) or a video file (.mp4, .avi, .webm, .mkv;
decoded with PyAV). A path without a suffix that is not a folder may name a video file with
one of those suffixes, as SSv2's lists do.

Frames are drawn from a clip in one of two ways (`sample_indices`):

- ``"segment"`` (TSN): the clip is cut into ``num_frames`` equal segments and one frame is
  taken from each: a random one when training, the middle one when evaluating.
- ``"uniform"``: ``num_frames`` frames evenly spaced over the whole clip, with one random
  offset for all of them when training, centred when evaluating.

A clip shorter than ``num_frames`` is served with frames repeated (each segment then spans
less than a frame); a clip with no frames is an error. Every problem that can be found before
training (missing clips, empty frame folders, malformed lines, labels out of range, no video
decoder) is reported by `check_clips` with the list file and line it came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from repadapter.errors import RepAdapterError
from repadapter.training.data.lists import TaskData, check_decodes, list_lines
from repadapter.training.data.transforms import eval_transform

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SAMPLINGS = ("segment", "uniform")
LIST_FILES = {"train": "train.txt", "val": "val.txt", "trainval": "trainval.txt", "test": "test.txt"}
CLASSES_FILE = "classes.txt"
LAYOUT = (
    "<root>/classes.txt (one class name per line, in label order) and some of "
    "<root>/{train,val,trainval,test}.txt with lines 'frame_folder_or_video label' "
    "(or 'path total_frames label'), paths relative to <root>"
)


@dataclass(frozen=True)
class ClipSample:
    """One labelled clip (a frame folder or a video file) and where it was listed."""

    path: Path
    label: int
    origin: str


def _resolve(root: Path, relative: str) -> Path:
    """``root / relative``, or that path with a video suffix when only such a file exists."""
    path = root / relative
    if not path.exists() and not path.suffix:
        for suffix in VIDEO_SUFFIXES:
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return path


def _parse(line: str, where: str) -> tuple[str, int]:
    """(path, label) of a 2- or 3-column line; a path may contain spaces."""
    parts = line.rsplit(maxsplit=2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].lstrip("-").isdigit():
        return parts[0], int(parts[2])  # mmaction rawframes: path total_frames label
    parts = line.rsplit(maxsplit=1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise RepAdapterError(
            f"{where}: expected 'frame_folder_or_video label' or 'path total_frames label', got {line!r}"
        )
    return parts[0], int(parts[1])


def read_video_list(
    list_file: str | os.PathLike[str], root: str | os.PathLike[str], num_classes: int | None = None
) -> list[ClipSample]:
    """Read a clip list (paths relative to ``root``) and check every clip (`check_clips`)."""
    list_file, root = Path(list_file), Path(root)
    samples = []
    for line, where in list_lines(list_file, "clip list", "clips"):
        relative, label = _parse(line, where)
        samples.append(ClipSample(_resolve(root, relative), label, where))
    check_clips(samples, num_classes)
    return samples


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a frame folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def _require_av(where: str) -> Any:
    try:
        import av
    except ImportError as err:
        raise RepAdapterError(
            f"{where}: decoding video files needs PyAV, which is not installed; install it with: "
            "pip install av (or extract the frames into folders of images)"
        ) from err
    return av


def check_clips(samples: Sequence[ClipSample], num_classes: int | None) -> None:
    """Refuse labels out of range, missing clips, frame folders without frames, frames that do
    not decode and video files without a decoder, naming the list line of each."""
    frames: list[tuple[Path, str]] = []
    for sample in samples:
        if sample.label < 0 or (num_classes is not None and sample.label >= num_classes):
            raise RepAdapterError(
                f"{sample.origin}: label {sample.label} is out of range for {num_classes} classes"
            )
        if sample.path.is_dir():
            files = frame_files(sample.path)
            if not files:
                raise RepAdapterError(
                    f"{sample.origin}: frame folder {sample.path} has no frames "
                    f"(images ending in {', '.join(FRAME_SUFFIXES)})"
                )
            frames += [(frame, sample.origin) for frame in files]
        elif sample.path.is_file():
            if sample.path.suffix.lower() not in VIDEO_SUFFIXES:
                raise RepAdapterError(
                    f"{sample.origin}: {sample.path} is neither a frame folder nor a video file "
                    f"({', '.join(VIDEO_SUFFIXES)})"
                )
            _require_av(sample.origin)
        else:
            raise RepAdapterError(f"{sample.origin}: clip {sample.path} does not exist")
    check_decodes(frames)


def load_video_list_task(root: str | os.PathLike[str]) -> TaskData:
    """A video task in the list layout (see ``LAYOUT``); ``trainval`` is ``train`` + ``val``
    when it has no list of its own."""
    root = Path(root)
    if not root.is_dir():
        raise RepAdapterError(f"video task folder {root} does not exist; expected layout: {LAYOUT}")
    classes_file = root / CLASSES_FILE
    if not classes_file.is_file():
        raise RepAdapterError(f"{root} has no {CLASSES_FILE}; expected layout: {LAYOUT}")
    class_names = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    if not class_names:
        raise RepAdapterError(f"{classes_file} lists no classes")
    splits: dict[str, list[Any]] = {
        split: read_video_list(root / file, root, len(class_names))
        for split, file in LIST_FILES.items()
        if (root / file).is_file()
    }
    if not splits:
        raise RepAdapterError(f"{root} has no clip lists; expected layout: {LAYOUT}")
    if "trainval" not in splits and "train" in splits and "val" in splits:
        splits["trainval"] = splits["train"] + splits["val"]
    return TaskData(root.name, len(class_names), splits, group="video", class_names=class_names)


def sample_indices(
    num_available: int, num_frames: int, mode: str, train: bool, rng: np.random.Generator
) -> list[int]:
    """``num_frames`` frame indices into a clip of ``num_available`` frames (module doc);
    ``rng`` is used only when ``train``."""
    if mode not in SAMPLINGS:
        raise RepAdapterError(f"frame sampling {mode!r} is not one of {SAMPLINGS}")
    if num_frames < 1:
        raise RepAdapterError(f"num_frames must be positive, got {num_frames}")
    if num_available < 1:
        raise RepAdapterError("the clip has no frames")
    span = num_available / num_frames  # frames per segment (may be < 1: frames repeat)
    if mode == "segment":
        offsets = rng.random(num_frames) if train else np.full(num_frames, 0.5)
    else:
        offsets = np.full(num_frames, rng.random() if train else 0.5)
    picks = [math.floor((i + float(offset)) * span) for i, offset in enumerate(offsets)]
    return [min(max(p, 0), num_available - 1) for p in picks]


def _decode_video(sample: ClipSample) -> list[Image.Image]:
    av = _require_av(sample.origin)
    try:
        with av.open(str(sample.path)) as container:
            return [frame.to_image() for frame in container.decode(video=0)]
    except (OSError, ValueError, av.error.FFmpegError) as err:
        raise RepAdapterError(f"{sample.origin}: cannot decode video {sample.path} ({err})") from err


def _open_frame(path: Path, sample: ClipSample) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise RepAdapterError(f"{sample.origin}: cannot decode frame {path} ({err})") from err


class ClipDataset(Dataset):
    """Clips of a sample list as ``(frames, label)``: frames a float tensor (T, 3, H, W), each
    frame resized (bicubic) to ``prep["input_size"]`` and normalised with ``prep``'s mean and
    std, as VideoMAE's ``pixel_values`` (a batch is (B, T, 3, H, W)).

    Training draws come from ``seed``, the index and torch's random stream (which the engine
    seeds, and DataLoader seeds per worker), so they change every epoch but repeat across runs.
    """

    def __init__(
        self,
        samples: Sequence[ClipSample],
        prep: dict[str, Any],
        num_frames: int,
        sampling: str = "segment",
        train: bool = False,
        seed: int = 0,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise RepAdapterError(f"frame sampling {sampling!r} is not one of {SAMPLINGS}")
        if num_frames < 1:
            raise RepAdapterError(f"num_frames must be positive, got {num_frames}")
        self.samples = list(samples)
        self.transform = eval_transform(prep)
        self.num_frames = num_frames
        self.sampling = sampling
        self.train = train
        self.seed = seed
        self._frames: dict[int, list[Path]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, index: int) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng(0)  # not drawn from
        draw = int(torch.randint(0, 2**31 - 1, ()).item())
        return np.random.default_rng([self.seed, index, draw])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        if sample.path.is_dir():
            if index not in self._frames:
                self._frames[index] = frame_files(sample.path)
            files = self._frames[index]
            if not files:
                raise RepAdapterError(f"{sample.origin}: frame folder {sample.path} has no frames")
            picks = sample_indices(len(files), self.num_frames, self.sampling, self.train, self._rng(index))
            opened = {i: _open_frame(files[i], sample) for i in sorted(set(picks))}
            frames = [opened[i] for i in picks]
        else:
            if not sample.path.is_file():
                raise RepAdapterError(f"{sample.origin}: clip {sample.path} does not exist")
            decoded = _decode_video(sample)
            if not decoded:
                raise RepAdapterError(f"{sample.origin}: video {sample.path} has no frames")
            picks = sample_indices(len(decoded), self.num_frames, self.sampling, self.train, self._rng(index))
            frames = [decoded[i].convert("RGB") for i in picks]
        return torch.stack([self.transform(frame) for frame in frames]), sample.label
