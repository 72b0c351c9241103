"""Median ORT latency (1 thread, batch 1) of ONNX files, interleaved rounds, ratios per round."""
import sys, time, numpy as np, onnxruntime as ort
paths = sys.argv[1:]
sess = []
for p in paths:
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    sess.append(ort.InferenceSession(p, o, providers=["CPUExecutionProvider"]))
shape = [1] + [d if isinstance(d, int) else 1 for d in sess[0].get_inputs()[0].shape[1:]]
x = (np.random.rand(*shape) * 255).astype(np.float32)
for s in sess:
    for _ in range(50): s.run(None, {"pixels": x})
times = [[] for _ in sess]
for r in range(30):
    for i, s in enumerate(sess):
        t = time.perf_counter()
        for _ in range(20): s.run(None, {"pixels": x})
        times[i].append((time.perf_counter() - t) / 20 * 1e3)
for p, t in zip(paths, times):
    print(f"{p}: p50 {np.median(t):.3f} ms, vs first {np.median(np.array(t) / np.array(times[0])):.2f}x")
