"""`calibrate`: the final compression mixture read from the target files (issue 10 §4).

When every target is a JPEG or a lossy WebP, the headers say what compressed each file: the codec (magic
bytes), for JPEGs the IJG quality (quantization tables, `degrade.estimate.jpeg_quality_from_file`) and the
chroma subsampling (frame header), for WebPs the libwebp quality (re-encoding search on the VP8 quantizer
indices, `degrade.webp_header`). The LQ stage's compression then follows the files: ``compression_types`` /
``compression_prob`` are the codecs' shares of the files, ``jpeg_sampling`` / ``jpeg_sampling_prob`` the
subsamplings' shares of the JPEG files, ``jpeg_range`` and ``webp_range`` the lowest to highest quality of each
codec. These are measured, not searched. A folder holding anything else (PNG, lossless WebP) keeps the
pixel-based JPEG estimate of `pipelines.data_jobs.calibrate_start` and the mixture is not used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from degrade.compress import JPEG_SAMPLINGS

__all__ = ["Mixture", "mixture_from_files"]


@dataclass(frozen=True)
class Mixture:
    """The compression fields of the LQ stage (StageConfig names) and whether the JPEG qualities are exact."""

    compression_types: tuple[str, ...]
    compression_prob: tuple[float, ...]
    jpeg_sampling: tuple[str, ...]
    jpeg_sampling_prob: tuple[float, ...]
    jpeg_range: tuple[float, float] | None  # None: no JPEG files
    webp_range: tuple[float, float] | None  # None: no WebP files
    exact_jpeg: bool  # every JPEG's tables are libjpeg's (table error 0)
    notes: tuple[str, ...] = ()

    def stage_fields(self) -> dict:
        """Keyword arguments for ``dataclasses.replace(stage, ...)`` (the JPEG range comes from the fit values)."""
        fields: dict = {"compression_types": self.compression_types, "compression_prob": self.compression_prob,
                        "jpeg_sampling": self.jpeg_sampling, "jpeg_sampling_prob": self.jpeg_sampling_prob}
        if self.webp_range is not None:
            fields["webp_range"] = self.webp_range
        return fields

    def to_json(self) -> dict:
        return {"compression_types": list(self.compression_types), "compression_prob": list(self.compression_prob),
                "jpeg_sampling": list(self.jpeg_sampling), "jpeg_sampling_prob": list(self.jpeg_sampling_prob),
                "jpeg_range": self.jpeg_range, "webp_range": self.webp_range, "exact_jpeg": self.exact_jpeg,
                "notes": list(self.notes)}


def _shares(counts: Counter) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names = tuple(sorted(counts, key=lambda k: (-counts[k], k)))  # most frequent first, then by name
    total = sum(counts.values())
    return names, tuple(counts[k] / total for k in names)


def mixture_from_files(files: list[dict]) -> Mixture | None:
    """The mixture of the module docstring from `pipelines.data_jobs.calibrate` file infos; None unless every
    file is a JPEG or a lossy WebP with a quality."""
    if not files or not all(f["format"] == "jpeg" or (f["format"] == "webp" and not f.get("lossless", True)
                                                      and f.get("quality") is not None) for f in files):
        return None
    jpegs = [f for f in files if f["format"] == "jpeg"]
    webps = [f for f in files if f["format"] == "webp"]
    notes = []
    sampling: Counter = Counter()
    for f in jpegs:
        if f["subsampling"] in JPEG_SAMPLINGS:
            sampling[f["subsampling"]] += 1
        else:  # 4:4:0, 4:1:1, gray: not a mode of the degradation model; the nearest common one stands in
            sampling["4:2:0"] += 1
            notes.append(f"{f['file']}: JPEG subsampling {f['subsampling']} is modelled as 4:2:0")
    types, prob = _shares(Counter(f["format"] for f in files))
    samplings, sampling_prob = _shares(sampling) if sampling else (("4:2:0",), (1.0,))
    jpeg_q = [float(f["quality"]) for f in jpegs]
    webp_q = [float(f["quality"]) for f in webps]
    return Mixture(types, prob, samplings, sampling_prob,
                   (min(jpeg_q), max(jpeg_q)) if jpeg_q else None, (min(webp_q), max(webp_q)) if webp_q else None,
                   all(f["table_error"] == 0 for f in jpegs), tuple(notes))
