"""Validation on a fixed degraded set: PSNR and SSIM as BasicSR (reference §4.7) and an image grid.

The set is paired shards written by `cli.py degrade` (members ``<key>.gt.png`` and ``<key>.lq.png``),
read through the loader's tar stage (`shards.stages.tar_members`) and decoded with OpenCV only. The model
output is clamped and rounded to 8 bits before the metrics, which compare with the raw (unsharpened) GT with
``crop_border = scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from pipelines.common import rgb_to_tensor, tensor_to_rgb, write_image_atomic
from pipelines.training.metrics import psnr, ssim
from shards.stages import Problems, tar_members

__all__ = ["ValidationPair", "read_pairs", "validate", "save_grid"]


@dataclass(frozen=True)
class ValidationPair:
    key: str
    lq: np.ndarray  # HWC RGB uint8
    gt: np.ndarray


def _decode(data: bytes, where: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{where}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _shard_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.tar"))
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"validation shards {spec}: no such file or folder (make them with `cli.py degrade`)")
    if not files:
        raise FileNotFoundError(f"validation shards {spec}: no .tar files in the folder")
    return files


PAIR_EXTS = ("gt.png", "lq.png")
PLAIN_EXTS = ("png", "jpg", "jpeg", "webp")  # what a GT shard from `cli.py shard` holds instead


def _shard_pairs(shard: Path) -> tuple[dict[str, dict[str, bytes]], int]:
    """The pair members of one shard by key, read through the loader's tar stage, and its plain-image count."""
    problems = Problems()  # not strict: the first problem becomes the message below, naming the file
    members: dict[str, dict[str, bytes]] = {}
    plain = 0
    for key, found in tar_members(str(shard), problems, lambda ext, _: ext in PAIR_EXTS, opener=_open_local):
        plain += sum(ext in PLAIN_EXTS for ext in found)
        for ext in PAIR_EXTS:
            if found.get(ext) is not None:
                members.setdefault(key, {})[ext[:2]] = found[ext]
    if problems.pending:
        _, _, detail = problems.pending[0]
        raise ValueError(f"validation shard {shard} is corrupt or truncated ({detail}); remake the set with "
                         f"`cli.py degrade`, or set val_shards = \"\" to train without validation")
    return members, plain


def _open_local(path: str):
    # A found local file, opened as a file: never through webdataset's URL schemes ("pipe:..." runs a command).
    return open(path, "rb")  # tar_members closes it


def read_pairs(spec: str, limit: int | None = None) -> list[ValidationPair]:
    """Read (LQ, GT) pairs from paired shards, shard by shard in name order and by key within a shard."""
    pairs: list[ValidationPair] = []
    images_seen = 0
    for shard in _shard_files(spec):
        members, plain = _shard_pairs(shard)
        images_seen += plain
        for key in sorted(members):
            found = members[key]
            if set(found) != {"gt", "lq"}:
                raise ValueError(f"{shard}: sample {key} lacks its {'gt' if 'gt' not in found else 'lq'} image")
            pairs.append(ValidationPair(key, _decode(found["lq"], f"{shard}:{key}.lq.png"),
                                        _decode(found["gt"], f"{shard}:{key}.gt.png")))
            if limit is not None and len(pairs) >= limit:
                return pairs
    if not pairs:
        what = (f"{images_seen} plain images (GT shards from `cli.py shard`?)" if images_seen
                else "no images")
        raise ValueError(f"validation shards {spec}: no KEY.gt.png + KEY.lq.png pairs, found {what}; make a "
                         f"validation set with `python cli.py degrade --shards {spec} --out val-pairs/ --count 16` "
                         f"and set val_shards = \"val-pairs/\"")
    return pairs


@torch.no_grad()
def validate(model: nn.Module, pairs: list[ValidationPair], scale: int,
             device: torch.device) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Mean PSNR/SSIM (RGB, crop_border = scale) and the (LQ, output, GT) images for a grid."""
    was_training = model.training
    model.eval()
    scores = {"psnr": [], "ssim": []}
    images = []
    for pair in pairs:
        output = tensor_to_rgb(model(rgb_to_tensor(pair.lq, device)))
        if output.shape != pair.gt.shape:
            raise ValueError(f"validation pair {pair.key}: output {output.shape} vs GT {pair.gt.shape}: "
                             f"was the set made for another scale than x{scale}?")
        scores["psnr"].append(psnr(output, pair.gt, crop_border=scale))
        scores["ssim"].append(ssim(output, pair.gt, crop_border=scale))
        images.append((pair.lq, output, pair.gt))
    model.train(was_training)
    return {name: float(np.mean(values)) for name, values in scores.items()}, images


def save_grid(images: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, max_rows: int = 8,
              captions: list[str] | None = None) -> None:
    """One row per pair: LQ (nearest-enlarged) | output | GT, with an optional caption line; written atomically."""
    rows = []
    for i, (lq, output, gt) in enumerate(images[:max_rows]):
        enlarged = cv2.resize(lq, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        row = np.hstack([enlarged, output, gt])
        if captions is not None:
            band = np.full((20, row.shape[1], 3), 255, np.uint8)
            cv2.putText(band, captions[i], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            row = np.vstack([row, band])
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_image_atomic(path, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
