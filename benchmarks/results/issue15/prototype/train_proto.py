import sys, time, numpy as np, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from check import run_tfl  # noqa
from skipnet.models import load_checkpoint
from skipnet.data import build_datasets, build_transform, pixel_batch
from skipnet.training import BiasLoss, build_loss
from skipnet.export.fake_quant import FakeQuantGraph
from skipnet.export.tflite_graph import load_model, save_model
from skipnet.export.tflite_export import _quantize
from skipnet.export.tflite_graph import uint8_input
run, d = sys.argv[1], Path(sys.argv[2]); lr = float(sys.argv[3]); epochs = int(sys.argv[4]); limit = int(sys.argv[5]); mode = sys.argv[6]
model, cfg = load_checkpoint(run)
z = np.load(d / "pixels.npz"); pix, lab = z["pix"], z["lab"]
g = FakeQuantGraph(d / "int8_stock.tflite", d / "fast.tflite")
def top1(quant):
    g.quantize = quant
    with torch.no_grad():
        l = g(torch.from_numpy(pix).float())
    g.quantize = True
    return l.numpy()
l0f, l0q = top1(False), top1(True)
print("before: float", (l0f.argmax(1) == lab).mean(), "fq", (l0q.argmax(1) == lab).mean())
train, _, _ = build_datasets(cfg["dataset"], None, int(cfg["img_size"]))
aug = build_transform(cfg["preprocess"], train=True, dataset=cfg["dataset"], normalize=False)
crit = build_loss(cfg["loss"]); bias = isinstance(crit, BiasLoss)
from skipnet.models import PixelModel
from skipnet.training import FeatureTap
teacher = PixelModel(model, cfg["mean"], cfg["std"], "nhwc").eval()
with torch.no_grad(), FeatureTap(model) as tap:
    cx = torch.from_numpy(z["cal"][:8]).float(); teacher(cx); g.track_features(cx, tap.features)
optname = sys.argv[7]
if optname == "adam":
    opt = torch.optim.Adam(g.parameters(), lr=lr)
else:
    opt = torch.optim.SGD(g.parameters(), lr=lr, momentum=0.9)
from skipnet.export.fake_quant import WEIGHTED
chscale = {}
for op in g.ops:
    if op.name in WEIGHTED and str(op.inputs[1]) in g.weights:
        w = g.weights[str(op.inputs[1])]; ax = WEIGHTED[op.name]
        sc = w.detach().abs().amax(dim=[d for d in range(w.dim()) if d != ax], keepdim=True)
        chscale[str(op.inputs[1])] = sc ** 2
bs = 64; steps = epochs * (limit // bs)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
gen = torch.Generator().manual_seed(0); t0 = time.time()
for e in range(epochs):
    order = torch.randperm(len(train.source), generator=gen)[:limit].tolist()
    for s in range(0, limit - bs + 1, bs):
        idx = order[s:s + bs]
        x = torch.from_numpy(pixel_batch(aug, [train.source[i][0] for i in idx])).float()
        y = torch.tensor([int(train.source[i][1]) for i in idx])
        logits = g(x)
        with torch.no_grad():
            t = teacher(x)
        kd = torch.nn.functional.kl_div(logits.log_softmax(1), t.log_softmax(1), log_target=True, reduction="batchmean")
        task = crit(logits, y, features=g.features) if bias else crit(logits, y)
        loss = {"task": task, "kd": kd, "both": task + kd}[mode]
        opt.zero_grad(); loss.backward()
        if optname == "sgdscaled":
            for k, sc in chscale.items():
                g.weights[k].grad *= sc
        opt.step(); sched.step()
print("train s", time.time() - t0, "loss", loss.item())
l1f, l1q = top1(False), top1(True)
print("after: float", (l1f.argmax(1) == lab).mean(), "fq", (l1q.argmax(1) == lab).mean())
# write back
m = load_model(d / "fast.tflite"); fg = m.subgraphs[0]
byname = {t.name.decode(): t for t in fg.tensors}
for k, p in g.weights.items():
    t = byname[g.names[int(k)]]
    m.buffers[t.buffer].data = np.frombuffer(p.detach().numpy().astype(np.float32).tobytes(), np.uint8)
save_model(m, d / "qat_fast.tflite")
ranges = {}
for i, (sc, zp) in g.scales.items():
    n = g.names[i]
    n = n[:-len("_quantized")] if n.endswith("_quantized") else n
    ranges[n] = {"min": np.array((-128 - zp) * sc, np.float32), "max": np.array((127 - zp) * sc, np.float32)}
ranges["serving_default_args_0"] = {"min": np.array(0, np.float32), "max": np.array(255, np.float32)}
import ai_edge_quantizer
from ai_edge_quantizer import quantizer, qtyping, algorithm_manager
from skipnet.export.tflite_graph import FLOAT_SCOPE
qt = quantizer.Quantizer(str(d / "qat_fast.tflite"))
qt.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
qt.update_quantization_recipe(regex=f"^{FLOAT_SCOPE}", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
(d / "qat_int8.tflite").write_bytes(bytes(qt.quantize(ranges, enable_progress_report=False).quantized_model))
pq = run_tfl(d / "qat_int8.tflite", pix, True)
print("file top1", (pq.argmax(1) == lab).mean(), "fq agree", (pq.argmax(1) == l1q.argmax(1)).mean(),
      "vs run float", (pq.argmax(1) == np.load(d / "torch_logits.npy").argmax(1)).mean())
g2 = FakeQuantGraph(d / "qat_int8.tflite", d / "qat_fast.tflite")
diffs = [abs(g2.scales[i][0] - g.scales[i][0]) / g.scales[i][0] for i in g.scales if i in g2.scales]
print("scale rel diff max", max(diffs), len(g2.scales), len(g.scales))
