"""Inference, evaluation and export: a trained (or released) generator applied to images, measured, or written out.

    enhance.py          one image array in, one out: the model, image kinds (gray, RGBA, 16-bit), alpha
    upscale.py          `upscale`: files and folders, naming, atomic writes, overwrite rules
    tiling.py           seam-free tiled inference, output assembled in place
    backends.py         torch / NNPACK / onnxruntime / OpenVINO and the precision of a run
    nnpack.py           fp32 CPU inference with NNPACK's Winograd convolutions (--backend nnpack, opt-in)
    quality.py          PSNR, SSIM and NIQE (batched, on the images' device); NIQE's pristine model in data/
    evaluate.py         `evaluate`: methods x test sets -> results.json / csv
    evaluate_report.py  table.md and comparison.png of an evaluation
    export.py           `export`: ONNX, ncnn, .pth, .safetensors with a check inference
"""
