import sys, numpy as np, torch, time
from pathlib import Path
from ai_edge_litert.interpreter import Interpreter
from skipnet.export.fake_quant import FakeQuantGraph
def run_tfl(path, x, int8_in):
    it = Interpreter(model_path=str(path)); it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for k in range(len(x)):
        xi = x[k:k+1].astype(np.float32)
        if int8_in: xi = (xi - 128).astype(np.int8)
        it.set_tensor(i["index"], xi); it.invoke(); outs.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(outs)
if __name__ == "__main__":
  d = Path(sys.argv[1]); z = np.load(d / "pixels.npz"); pix, lab = z["pix"], z["lab"]
  pf = run_tfl(d / "fast.tflite", pix, False); pq = run_tfl(d / "int8_stock.tflite", pix, True)
  g = FakeQuantGraph(d / "int8_stock.tflite", d / "fast.tflite").eval()
  x = torch.from_numpy(pix).float()
  with torch.no_grad():
      g.quantize = False; lf = g(x).numpy()
      t = time.time(); g.quantize = True; lq = g(x).numpy(); print("fq fwd s", time.time() - t)
  tl = np.load(d / "torch_logits.npy")
  print("float graph vs torch logits max diff", np.abs(lf - tl).max(), "agree", (lf.argmax(1) == tl.argmax(1)).mean())
  print("float graph vs float tflite prob agree", (lf.argmax(1) == pf.argmax(1)).mean())
  print("fq vs int8 file agree", (lq.argmax(1) == pq.argmax(1)).mean(), "int8 vs torch", (pq.argmax(1) == tl.argmax(1)).mean())
  print("top1 torch", (tl.argmax(1) == lab).mean(), "int8", (pq.argmax(1) == lab).mean(), "fq", (lq.argmax(1) == lab).mean())
  pl = np.log(np.clip(pq, 1e-12, None)); ql = torch.log_softmax(torch.from_numpy(lq), 1).numpy()
  print("max log-prob diff fq vs file", np.abs(pl - ql).max())
  