"""Prototype inputs: float/fast/int8 tflite of a run plus calibration and parity pixels."""
import sys, numpy as np, torch
from pathlib import Path
from skipnet.models import load_checkpoint, PixelModel
from skipnet.data import build_datasets, sample_pixels
from skipnet.export.tflite_export import export_tflite, quantize_tflite_int8
from skipnet.export.tflite_graph import rewrite_graph
run, out = sys.argv[1], Path(sys.argv[2]); out.mkdir(exist_ok=True, parents=True)
model, cfg = load_checkpoint(run)
size = int(cfg["img_size"])
pm = PixelModel(model, cfg["mean"], cfg["std"], "nhwc", True).eval()
export_tflite(pm, size, out / "float.tflite")
rewrite_graph(out / "float.tflite", out / "fast.tflite", float_min_height=size // 2)
train, val, _ = build_datasets(cfg["dataset"], cfg.get("train", {}).get("data_dir"), size, augment=False)
cal, _ = sample_pixels(train.source, cfg["preprocess"], 256)
pix, lab = sample_pixels(val.source, cfg["preprocess"], 10000)
quantize_tflite_int8(out / "fast.tflite", cal, out / "int8_stock.tflite", graph="stock")
np.savez(out / "pixels.npz", cal=cal, pix=pix, lab=lab)
with torch.no_grad():
    np.save(out / "torch_logits.npy", PixelModel(model, cfg["mean"], cfg["std"], "nhwc").eval()(torch.from_numpy(pix).float()).numpy())
print("ok")
