"""Hugging Face Hub folders: adapters, merged models, and their model cards.

An adapter folder holds ``adapter_model.safetensors`` (the adapter file, self-describing),
``adapter_config.json`` (the same description, readable without safetensors) and a
``README.md`` model card. A merged model is saved the way timm saves models for the Hub
(``config.json`` + ``model.safetensors``), so ``timm.create_model("hf-hub:<repo>")`` and
``timm.create_model("local-dir:<folder>")`` load it with no repadapter installed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from timm.models import save_for_hf
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families import family_named, find_family
from repadapter.families.factory import create, pretrained_unavailable
from repadapter.files import read_adapter_file, read_tensor_file
from repadapter.tuner.adapter_files import load_adapter, save_adapter
from repadapter.tuner.inspection import count_parameters, has_adapters

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MERGED_WEIGHTS = "model.safetensors"
MERGED_CONFIG = "config.json"
# A PEFT folder (``PeftModel.save_pretrained``) uses the same two file names; its config names a
# ``peft_type`` and ours a ``method``. Each loader names the other one when given the wrong folder.
LOAD_WITH = "repadapter.from_pretrained(folder) (a repadapter adapter folder, not a PEFT one)"
PEFT_ROUTE = (
    "it is a PEFT adapter folder (PeftModel.save_pretrained): load it with "
    "`import repadapter.peft_plugin` then `peft.PeftModel.from_pretrained(base_model, folder)`"
)


def _adapter_card(
    meta: dict[str, Any], trained: int, metrics: dict[str, float] | None, task: str | None
) -> str:
    """The model card of an adapter folder; what it says about the base and the sites depends on
    the family that wrote the file (timm models load by name, other libraries' need ``model=``)."""
    config = meta["config"]
    base = meta.get("base_model")
    family = meta.get("family", "timm_vit")
    from_timm = family_named(family).library == "timm"
    hub_id = f"timm/{base}" if from_timm and base else base
    # A consumer "" is the site's host layer itself (CNN sites fold into the conv they wrap).
    layers = sorted(
        {c or host.rsplit(".", 1)[-1] for host, site in meta["sites"].items() for c in site["consumers"]}
    )
    shown = ", ".join(f"`{name}`" for name in layers[:4]) + (", ..." if len(layers) > 4 else "")
    rows = "".join(f"| {name} | {value:.4g} |\n" for name, value in (metrics or {}).items())
    targets = config["target_modules"]
    placement = f"target_modules {list(targets)}" if targets else config["placement"]
    load = (
        'model = ra.from_pretrained("<this repo or folder>")  # base model from timm + this adapter'
        if from_timm and base
        else f"base = ...  # the {base or 'base'} model, as its library builds it\n"
        'model = ra.from_pretrained("<this repo or folder>", model=base)'
    )
    return f"""---
library_name: repadapter
{f"base_model: {hub_id}{chr(10)}" if hub_id else ""}tags:
- image-classification
- repadapter
- parameter-efficient-fine-tuning
---

# RepAdapter for `{base or family}`{f" on {task}" if task else ""}

A [RepAdapter](https://arxiv.org/abs/2302.08106) adapter for a {family} model: linear bottlenecks
on the inputs of {len(meta["sites"])} sites (feeding {shown}), which fold into those layers after
training, so the deployed model has the base model's size and speed.

| setting | value |
|---|---|
| base model | `{base or "not recorded"}` ({family}) |
| classes | {meta.get("num_classes")} |
| placement | {placement} |
| dim / groups / scale | {config["dim"]} / {config["groups"]} / {config["scale"]} |
| adapter sites | {len(meta["sites"])} |
| trained parameters (adapters + head) | {trained:,} |
| repadapter version | {meta["library_version"]} |
{f"{chr(10)}| metric | value |{chr(10)}|---|---|{chr(10)}{rows}" if rows else ""}
## Use

```python
import repadapter as ra

{load}
deployed = ra.merge(model)  # the base architecture, adapters folded in
```
"""


def _merged_card(
    model: nn.Module, architecture: str, metrics: dict[str, float] | None, task: str | None
) -> str:
    rows = "".join(f"| {name} | {value:.4g} |\n" for name, value in (metrics or {}).items())
    params = sum(p.numel() for p in model.parameters())
    return f"""---
library_name: timm
tags:
- image-classification
- repadapter
---

# `{architecture}`{f" adapted to {task}" if task else ""}, RepAdapter merged

A `{architecture}` whose RepAdapter adapters were folded into its weights: the plain timm
architecture ({params:,} parameters, {getattr(model, "num_classes", "?")} classes), no adapter code
needed to run it.
{f"{chr(10)}| metric | value |{chr(10)}|---|---|{chr(10)}{rows}" if rows else ""}
## Use

```python
import timm

model = timm.create_model("hf-hub:<this repo>", pretrained=True)  # or "local-dir:<folder>"
```
"""


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike[str],
    metrics: dict[str, float] | None = None,
    task: str | None = None,
) -> Path:
    """Save an injected model's adapter, or a merged (plain timm) model, as a Hub folder.

    Files are written to a temporary folder first and moved in when all are complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".incoming-", suffix=".partial") as tmp_name:
        tmp = Path(tmp_name)
        if has_adapters(model):
            meta = read_adapter_file(save_adapter(model, tmp / ADAPTER_WEIGHTS)).metadata
            # peft_type routes PEFT's loader to repadapter.peft_plugin, which then names this loader
            described = {**meta, "peft_type": "REPADAPTER", "load_with": LOAD_WITH}
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
            card = _adapter_card(meta, count_parameters(model).trainable, metrics, task)
        else:
            family = find_family(model)
            if family is not None and family.library != "timm":
                raise RepAdapterError(
                    f"save_pretrained saves merged timm models as timm Hub folders; this is a {family.name} "
                    f"model ({family.description}), which timm cannot load: save it with its own library, "
                    "or save the adapter before merging"
                )
            architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
            if not architecture:
                raise RepAdapterError(
                    "save_pretrained saves timm models; this one has no pretrained_cfg architecture"
                )
            save_for_hf(model, str(tmp), safe_serialization=True)
            card = _merged_card(model, architecture, metrics, task)
        (tmp / "README.md").write_text(card)
        for file in tmp.iterdir():
            os.replace(file, folder / file.name)
    return folder


def _resolve(folder_or_repo_id: str | os.PathLike[str]) -> Path:
    """A local folder as is; anything else is a Hub repo id, downloaded into the HF cache."""
    path = Path(folder_or_repo_id)
    if path.is_dir():
        return path
    if path.exists() or str(folder_or_repo_id).count("/") != 1:
        raise RepAdapterError(f"{folder_or_repo_id} is neither a folder nor a Hub repo id like 'user/name'")
    from huggingface_hub import snapshot_download

    patterns = [ADAPTER_WEIGHTS, ADAPTER_CONFIG, MERGED_WEIGHTS, MERGED_CONFIG, "README.md"]
    try:
        return Path(snapshot_download(str(folder_or_repo_id), allow_patterns=patterns))
    except Exception as err:  # network, auth and missing-repo errors come in many types
        raise RepAdapterError(
            f"cannot download {folder_or_repo_id} from the Hugging Face Hub: {err}"
        ) from err


def _refuse_peft_folder(folder: Path) -> None:
    try:
        described = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError):
        return
    if isinstance(described, dict) and "peft_type" in described and "sites" not in described:
        raise RepAdapterError(f"{folder} is not a repadapter.save_pretrained folder: {PEFT_ROUTE}")


def _rebuild_base(folder: Path, meta: dict[str, Any], pretrained: bool) -> nn.Module:
    """The base model an adapter folder names, with its recorded constructor arguments."""
    name, kwargs = meta["base_model"], meta.get("base_kwargs", {})
    if kwargs is None:
        raise RepAdapterError(
            f"{folder} adapts a {name} built with constructor arguments repadapter could not record; "
            "build that model and pass model=<the base model>"
        )
    why = pretrained_unavailable(name) if pretrained else None
    if why:
        raise RepAdapterError(
            f"{folder} adapts {name}, whose weights are not in the local cache, and {why}: the Hub "
            "cannot be reached (offline?). Pass model=<the base model> (e.g. built from a local "
            "checkpoint), download the weights once online, or base_pretrained=False for random weights"
        )
    try:
        return create(name, pretrained, num_classes=meta["num_classes"], **kwargs)
    except RuntimeError as err:  # timm's strict load: the weights do not fit the recorded arguments
        raise RepAdapterError(
            f"the pretrained weights of {name} do not fit the base this adapter was made on ({kwargs}): "
            f"{err}. Build the base and pass model=<the base model>, or base_pretrained=False"
        ) from err


def from_pretrained(
    folder_or_repo_id: str | os.PathLike[str], model: nn.Module | None = None, base_pretrained: bool = True
) -> nn.Module:
    """Load a folder written by `save_pretrained`, locally or from the Hub.

    For an adapter folder: into ``model`` if given, else into the base model it names (with
    its pretrained weights unless ``base_pretrained=False``). For a merged folder: the plain
    timm model.
    """
    folder = _resolve(folder_or_repo_id)
    _refuse_peft_folder(folder)
    if (folder / ADAPTER_WEIGHTS).is_file():
        if model is None:
            meta = read_adapter_file(folder / ADAPTER_WEIGHTS).metadata
            if family_named(str(meta.get("family", "timm_vit"))).library != "timm":
                base = meta.get("base_model") or "base not recorded"
                raise RepAdapterError(
                    f"{folder} adapts a {meta['family']} model ({base}), which repadapter cannot build "
                    "by name; build it with its library and pass model=<the base model>"
                )
            if not meta.get("base_model") or not isinstance(meta.get("num_classes"), int):
                raise RepAdapterError(f"{folder} does not name its base model; pass model=<the base model>")
            model = _rebuild_base(folder, meta, base_pretrained)
        return load_adapter(model, folder / ADAPTER_WEIGHTS)
    if (folder / MERGED_CONFIG).is_file() and (folder / MERGED_WEIGHTS).is_file():
        import timm

        read_tensor_file(folder / MERGED_WEIGHTS, "merged model file")  # safetensors, all finite
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    raise RepAdapterError(
        f"{folder} holds neither {ADAPTER_WEIGHTS} (an adapter) nor {MERGED_CONFIG} + {MERGED_WEIGHTS} "
        "(a merged model)"
    )
