"""BiasLoss and FeatureTap against hand-computed values, a reference-semantics implementation, and edge cases."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skipnet.models.features import FeatureTap, unwrap_model
from skipnet.models.skipnet import SkipNet
from skipnet.training.bias_loss import BiasLoss

ALPHA, BETA = 0.3, 0.3


# ---------------------------------------------------------------------------------------------
# hand-computed example (plain python math only)
# ---------------------------------------------------------------------------------------------


def _py_ce(row: list[float], y: int, smoothing: float = 0.0) -> float:
    """Cross-entropy of one logit row, by hand: -sum_k q_k log softmax_k."""
    mx = max(row)
    lse = mx + math.log(sum(math.exp(r - mx) for r in row))
    logp = [r - lse for r in row]
    k = len(row)
    q = [(1.0 - smoothing) * (1.0 if j == y else 0.0) + smoothing / k for j in range(k)]
    return -sum(qj * lj for qj, lj in zip(q, logp))


def _py_bias_loss(samples, logits, targets, lo, smoothing=0.0, alpha=ALPHA, beta=BETA):
    """L = mean z_i CE_i with v^ = (v - lo) / (max v - min v) over this batch."""
    v = [statistics.variance(s) for s in samples]  # unbiased, like torch.var
    rng = max(v) - min(v)
    z = [math.exp(alpha * (vi - lo) / rng) - beta for vi in v]
    ce = [_py_ce(r, y, smoothing) for r, y in zip(logits, targets)]
    return sum(zi * ci for zi, ci in zip(z, ce)) / len(z)


# Per-sample feature maps of shape (2, 1, 2) = 4 values, in C,H,W order.
BATCH1 = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0], [2.0, -2.0, 0.0, 0.0]]  # var 5/3, 1/3, 8/3
BATCH2 = [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 3.0], [0.0, 2.0, 0.0, 2.0]]  # var 5/3, 3, 4/3
BATCH3 = [[0.0, 0.5, 0.0, 0.5], [1.0, 1.0, 1.0, 2.0], [0.0, 4.0, 0.0, 0.0]]  # var 1/12, 1/4, 4
LOGITS1 = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]]
LOGITS2 = [[0.0, 1.0, 2.0], [1.5, -0.5, 0.5], [0.3, 0.3, -0.2]]
LOGITS3 = [[1.0, -1.0, 0.0], [0.0, 0.0, 2.0], [-2.0, 1.0, 1.0]]
TARGETS1, TARGETS2, TARGETS3 = [0, 2, 1], [1, 0, 2], [2, 2, 0]


def _t(samples, logits, targets):
    f = torch.tensor(samples, dtype=torch.float32).reshape(3, 2, 1, 2)
    return f, torch.tensor(logits, dtype=torch.float32), torch.tensor(targets)


def test_hand_computed_local():
    f, x, y = _t(BATCH1, LOGITS1, TARGETS1)
    v = [statistics.variance(s) for s in BATCH1]
    expected = _py_bias_loss(BATCH1, LOGITS1, TARGETS1, lo=min(v))
    got = BiasLoss(ALPHA, BETA, normalization="local")(x, y, features=f)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # local weights lie in [1 - beta, e^alpha - beta], with the extremes hit by min and max variance
    crit = BiasLoss(ALPHA, BETA, normalization="local")
    crit(x, y, features=f)
    w = crit.last_weights
    assert w[1].item() == pytest.approx(1 - BETA, abs=1e-6)  # smallest variance
    assert w[2].item() == pytest.approx(math.exp(ALPHA) - BETA, abs=1e-6)  # largest variance


def test_hand_computed_global_running_min_carries_over():
    crit = BiasLoss(ALPHA, BETA, normalization="global")
    assert math.isinf(crit.running_min.item())

    # batch 1: running min = its own min (1/3) -> same as local normalisation
    v1 = [statistics.variance(s) for s in BATCH1]
    m = min(v1)
    f1, x1, y1 = _t(BATCH1, LOGITS1, TARGETS1)
    got1 = crit(x1, y1, features=f1)
    assert got1.item() == pytest.approx(_py_bias_loss(BATCH1, LOGITS1, TARGETS1, lo=m), abs=1e-6)
    assert crit.running_min.item() == pytest.approx(1 / 3, abs=1e-7)

    # batch 2: own min 4/3 > 1/3, so it is normalised with the carried min 1/3 but divided by its own range 5/3
    f2, x2, y2 = _t(BATCH2, LOGITS2, TARGETS2)
    got2 = crit(x2, y2, features=f2)
    v2 = [statistics.variance(s) for s in BATCH2]
    m = min(m, min(v2))
    assert m == pytest.approx(1 / 3)
    exp2 = _py_bias_loss(BATCH2, LOGITS2, TARGETS2, lo=m)
    assert got2.item() == pytest.approx(exp2, abs=1e-6)
    # this is not what local normalisation gives
    assert abs(exp2 - _py_bias_loss(BATCH2, LOGITS2, TARGETS2, lo=min(v2))) > 1e-2
    # weights above e^alpha - beta: v^ exceeds 1 in global mode
    assert crit.last_weights.max().item() > math.exp(ALPHA) - BETA + 1e-3
    assert crit.running_min.item() == pytest.approx(1 / 3, abs=1e-7)

    # batch 3: its min 1/12 is below the running min: updated before use
    f3, x3, y3 = _t(BATCH3, LOGITS3, TARGETS3)
    got3 = crit(x3, y3, features=f3)
    v3 = [statistics.variance(s) for s in BATCH3]
    m = min(m, min(v3))
    assert m == pytest.approx(1 / 12)
    assert got3.item() == pytest.approx(_py_bias_loss(BATCH3, LOGITS3, TARGETS3, lo=m), abs=1e-6)
    assert crit.running_min.item() == pytest.approx(1 / 12, abs=1e-7)


def test_hand_computed_label_smoothing():
    f, x, y = _t(BATCH1, LOGITS1, TARGETS1)
    v = [statistics.variance(s) for s in BATCH1]
    expected = _py_bias_loss(BATCH1, LOGITS1, TARGETS1, lo=min(v), smoothing=0.1)
    got = BiasLoss(normalization="local", label_smoothing=0.1)(x, y, features=f)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    plain = BiasLoss(normalization="local")(x, y, features=f)
    assert abs(got.item() - plain.item()) > 1e-3


# ---------------------------------------------------------------------------------------------
# equivalence with a straightforward implementation of the reference semantics
# ---------------------------------------------------------------------------------------------


class ReferenceSemantics:
    """The paper's formula as the reference code computes it (running min starts at 100000, no guards)."""

    def __init__(self, alpha: float, beta: float, mode: str):
        self.alpha, self.beta, self.mode = alpha, beta, mode
        self.global_min = torch.tensor(100000.0)

    def __call__(self, logits, target, features):
        v = torch.var(features.detach().reshape(features.shape[0], -1), dim=1)
        bmin, bmax = v.min(), v.max()
        if self.mode == "global":
            self.global_min = torch.minimum(self.global_min, bmin)
            vhat = (v - self.global_min) / (bmax - bmin)
        else:
            vhat = (v - bmin) / (bmax - bmin)
        w = torch.exp(self.alpha * vhat) - self.beta
        return (w * F.cross_entropy(logits, target, reduction="none")).mean()


def _random_batch(g: torch.Generator, n: int, scale: float, classes: int = 7):
    spread = 0.5 + 1.5 * torch.rand(n, 1, 1, 1, generator=g)  # per-sample feature scale -> varied variances
    f = torch.randn(n, 6, 3, 3, generator=g) * spread * scale
    x = torch.randn(n, classes, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return f, x, y


@pytest.mark.parametrize("mode", ["global", "local"])
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.3), (1.0, 0.1)])
def test_matches_reference_semantics(mode, alpha, beta):
    g = torch.Generator().manual_seed(1234)
    ours, ref = BiasLoss(alpha, beta, normalization=mode), ReferenceSemantics(alpha, beta, mode)
    # batch scales vary so the running minimum comes from different batches
    for scale in [1.0, 0.7, 1.5, 0.4, 2.0, 0.9]:
        f, x, y = _random_batch(g, 16, scale)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = ours(x1, y, features=f), ref(x2, y, f)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        a.backward(), b.backward()
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-7)
        if mode == "global":
            assert ours.running_min.item() == pytest.approx(ref.global_min.item(), rel=1e-7)


# ---------------------------------------------------------------------------------------------
# edge cases: never NaN / inf
# ---------------------------------------------------------------------------------------------


def _finite_loss_and_grad(crit, f, x, y):
    x = x.detach().clone().requires_grad_()
    loss = crit(x, y, features=f)
    loss.backward()
    assert torch.isfinite(loss).item(), loss
    assert torch.isfinite(x.grad).all().item()
    assert torch.isfinite(crit.last_weights).all().item()
    return loss, x.grad


@pytest.mark.parametrize("mode", ["global", "local"])
def test_batch_of_one(mode):
    crit = BiasLoss(normalization=mode)
    f, x, y = torch.randn(1, 8, 2, 2), torch.randn(1, 5), torch.tensor([3])
    loss, _ = _finite_loss_and_grad(crit, f, x, y)
    # max == min -> v^ = 0 -> z = 1 - beta
    torch.testing.assert_close(loss, (1 - BETA) * F.cross_entropy(x, y))
    # also after the running min has come from another, lower-variance batch
    crit(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), features=0.1 * torch.randn(4, 8, 2, 2))
    loss, _ = _finite_loss_and_grad(crit, f, x, y)
    torch.testing.assert_close(loss, (1 - BETA) * F.cross_entropy(x, y))


@pytest.mark.parametrize("mode", ["global", "local"])
def test_identical_features(mode):
    crit = BiasLoss(normalization=mode)
    f = torch.randn(1, 4, 3, 3).expand(6, 4, 3, 3).contiguous()
    x, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    loss, _ = _finite_loss_and_grad(crit, f, x, y)
    torch.testing.assert_close(crit.last_weights, torch.full((6,), 1 - BETA))
    torch.testing.assert_close(loss, (1 - BETA) * F.cross_entropy(x, y))
    # all-zero features (variance exactly 0 everywhere)
    _finite_loss_and_grad(crit, torch.zeros(6, 4, 3, 3), x, y)


@pytest.mark.parametrize("mode", ["global", "local"])
def test_near_identical_features(mode):
    crit = BiasLoss(normalization=mode)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    # a first batch with low variance, so the global running min lies far below the next batch
    _finite_loss_and_grad(crit, 0.01 * torch.randn(6, 4, 3, 3, generator=g), x, y)
    base = torch.randn(1, 4, 3, 3, generator=g)
    for eps in [1e-3, 1e-5, 1e-7, 1e-9]:
        f = base + eps * torch.randn(6, 4, 3, 3, generator=g)
        _finite_loss_and_grad(crit, f, x, y)
        assert crit.last_weights.max().item() <= math.exp(crit.max_exponent) * (1 + 1e-6)


@pytest.mark.parametrize("mode", ["global", "local"])
@pytest.mark.parametrize("scale", [1e4, 1e18, 1e25, 1e38])
def test_huge_feature_values(mode, scale):
    crit = BiasLoss(normalization=mode)
    f = torch.randn(5, 4, 3, 3) * scale  # variances up to / beyond float32 overflow
    x, y = torch.randn(5, 5), torch.randint(0, 5, (5,))
    _finite_loss_and_grad(crit, f, x, y)


def test_non_finite_features_give_finite_weights():
    crit = BiasLoss(normalization="global")
    f = torch.randn(4, 3, 2, 2)
    f[1, 0, 0, 0] = float("inf")
    f[2, 1, 1, 1] = float("nan")
    _finite_loss_and_grad(crit, f, torch.randn(4, 5), torch.randint(0, 5, (4,)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["global", "local"])
def test_low_precision_inputs(dtype, mode):
    g = torch.Generator().manual_seed(3)
    f32, x32, y = _random_batch(g, 8, 1.0)
    f32 = f32 * 300  # fp16 values up to ~2e3; their squares would overflow fp16 but not float32
    f, x = f32.to(dtype), x32.to(dtype).requires_grad_()
    crit = BiasLoss(normalization=mode)
    loss = crit(x, y, features=f)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss).item() and x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all().item()
    # computed in float32: equals the float32 loss on the (rounded) low-precision values
    ref = BiasLoss(normalization=mode)(x.detach().float(), y, features=f.float())
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    # huge fp16 features (near fp16 max) are fine too
    big = (torch.randn(8, 6, 3, 3, generator=g) * 3e4).clamp(-6e4, 6e4).to(dtype)
    _finite_loss_and_grad(BiasLoss(normalization=mode), big, x32.to(dtype), y)


@pytest.mark.parametrize("mode", ["global", "local"])
def test_float32_inside_autocast(mode):
    # under autocast some ops (e.g. linalg.vecdot) would silently run in bfloat16; the loss must not
    g = torch.Generator().manual_seed(4)
    f, x, y = _random_batch(g, 16, 1.0)
    f = f.repeat(1, 40, 1, 1)  # 2160 values per sample: bfloat16 accumulation would be visibly off
    expected = BiasLoss(normalization=mode)(x, y, features=f)
    crit = BiasLoss(normalization=mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = crit(x, y, features=f)
    assert got.dtype == torch.float32 and crit.last_weights.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["global", "local"])
def test_label_smoothing_passed_through(mode):
    g = torch.Generator().manual_seed(5)
    f, x, y = _random_batch(g, 10, 1.0)
    crit = BiasLoss(normalization=mode, label_smoothing=0.2)
    loss = crit(x, y, features=f)
    expected = (crit.last_weights * F.cross_entropy(x, y, reduction="none", label_smoothing=0.2)).mean()
    torch.testing.assert_close(loss, expected)


def test_soft_targets():
    g = torch.Generator().manual_seed(6)
    f, x, y = _random_batch(g, 10, 1.0)
    probs = F.one_hot(y, 7).float()
    a = BiasLoss(normalization="local")(x, probs, features=f)
    b = BiasLoss(normalization="local")(x, y, features=f)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# state: train / eval, checkpoints
# ---------------------------------------------------------------------------------------------


def test_eval_mode_does_not_change_running_min():
    g = torch.Generator().manual_seed(7)
    crit = BiasLoss(normalization="global").eval()
    f, x, y = _random_batch(g, 8, 1.0)
    loss_eval_fresh = crit(x, y, features=f)  # m is inf: uses the batch min
    assert math.isinf(crit.running_min.item())
    torch.testing.assert_close(loss_eval_fresh, BiasLoss(normalization="local")(x, y, features=f))

    crit.train()
    f, x, y = _random_batch(g, 8, 2.0)
    crit(x, y, features=f)
    m = crit.running_min.clone()
    crit.eval()
    for scale in [0.1, 1.0, 5.0]:  # including a batch whose min is below m
        f, x, y = _random_batch(g, 8, scale)
        state = BiasLoss(normalization="global")
        state.load_state_dict(crit.state_dict())
        loss_eval = crit(x, y, features=f)
        assert torch.equal(crit.running_min, m)
        # the eval loss is what a training step would compute on this batch, minus the side effect
        torch.testing.assert_close(loss_eval, state.train()(x, y, features=f))


def test_state_dict_round_trip():
    g = torch.Generator().manual_seed(8)
    crit = BiasLoss(normalization="global")
    assert "running_min" in crit.state_dict()
    for scale in [1.0, 0.3, 2.0]:
        f, x, y = _random_batch(g, 8, scale)
        crit(x, y, features=f)
    sd = crit.state_dict()
    assert sd["running_min"].dtype == torch.float32 and torch.isfinite(sd["running_min"])

    # through a real checkpoint file format (bytes), weights_only
    import io

    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    restored = BiasLoss(normalization="global")
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(restored.running_min, crit.running_min)

    f, x, y = _random_batch(g, 8, 1.2)
    a, b = crit(x, y, features=f), restored(x, y, features=f)
    assert torch.equal(a, b)
    assert torch.equal(crit.running_min, restored.running_min)
    # and a fresh loss (no state) gives a different value: the state matters
    fresh = BiasLoss(normalization="global")(x, y, features=f)
    assert abs(fresh.item() - a.item()) > 1e-4


def test_half_module_keeps_float32_running_min():
    crit = BiasLoss().half()  # e.g. model.half() on a container that holds the loss
    f, x, y = _random_batch(torch.Generator().manual_seed(9), 8, 1.0)
    crit(x, y, features=f)
    assert crit.running_min.dtype == torch.float32
    assert torch.isfinite(crit.running_min)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["global", "local"])
def test_weights_carry_no_gradient(mode):
    torch.manual_seed(10)
    layer = nn.Conv2d(3, 6, 3, padding=1)
    head = nn.Linear(6, 5)
    inp, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))

    def run(loss_fn):
        layer.zero_grad(), head.zero_grad()
        feats = layer(inp)
        logits = head(feats.mean(dim=(2, 3)))
        loss = loss_fn(logits, feats)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in (*layer.parameters(), *head.parameters())]

    crit = BiasLoss(normalization=mode)
    loss_a, grads_a = run(lambda logits, feats: crit(logits, y, features=feats))
    z = crit.last_weights.clone()
    assert not z.requires_grad
    # same thing with the weights as constants: identical gradients (nothing flows through the weights)
    loss_b, grads_b = run(lambda logits, feats: (z * F.cross_entropy(logits, y, reduction="none")).mean())
    torch.testing.assert_close(loss_a, loss_b)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)

    # features that feed only the weights receive no gradient at all
    feats = torch.randn(8, 6, 4, 4, requires_grad=True)
    logits = torch.randn(8, 5, requires_grad=True)
    BiasLoss(normalization=mode)(logits, y, features=feats).backward()
    assert feats.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# arguments, repr, logging
# ---------------------------------------------------------------------------------------------


def test_argument_validation():
    with pytest.raises(ValueError, match="normalization"):
        BiasLoss(normalization="batch")
    with pytest.raises(ValueError, match="label_smoothing"):
        BiasLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="alpha"):
        BiasLoss(alpha=float("nan"))
    crit = BiasLoss()
    x, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    with pytest.raises(ValueError, match="features"):
        crit(x, y)
    with pytest.raises(ValueError, match="batch size"):
        crit(x, y, features=torch.randn(3, 4, 2, 2))
    with pytest.raises(ValueError, match="at least 2 values"):
        crit(x, y, features=torch.randn(4, 1))
    with pytest.raises(ValueError, match="logits"):
        crit(torch.randn(4, 5, 2), y, features=torch.randn(4, 4, 2, 2))
    assert math.isinf(crit.running_min.item())  # failed calls leave no trace


def test_repr_and_last_weights():
    crit = BiasLoss(0.5, 0.2, normalization="local", label_smoothing=0.1, sync=False)
    r = repr(crit)
    assert "alpha=0.5" in r and "beta=0.2" in r and "'local'" in r and "label_smoothing=0.1" in r and "sync=False" in r
    assert crit.last_weights is None
    f, x, y = _random_batch(torch.Generator().manual_seed(11), 6, 1.0)
    crit(x, y, features=f)
    w = crit.last_weights
    assert w.shape == (6,) and not w.requires_grad
    assert w.min().item() == pytest.approx(1 - 0.2, abs=1e-6) and w.max().item() == pytest.approx(
        math.exp(0.5) - 0.2, abs=1e-6
    )


def test_empty_batch():
    crit = BiasLoss()
    x = torch.randn(0, 5, requires_grad=True)
    loss = crit(x, torch.zeros(0, dtype=torch.long), features=torch.randn(0, 4, 2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert math.isinf(crit.running_min.item())


# ---------------------------------------------------------------------------------------------
# FeatureTap
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skipnet_m():
    torch.manual_seed(0)
    return SkipNet(10, 1.0).eval()


def test_tap_equals_forward_features(skipnet_m):
    x = torch.randn(2, 3, 64, 64)
    with FeatureTap(skipnet_m) as tap:
        assert tap.layer == "conv" and tap.module is skipnet_m.conv
        logits = skipnet_m(x)
        feats = tap.features
    assert feats.shape == (2, 960, 2, 2)
    with torch.no_grad():
        assert torch.equal(feats, skipnet_m.forward_features(x))
        assert torch.equal(logits, skipnet_m.forward_head(feats))
    assert feats.requires_grad  # part of the graph, not detached


def test_tap_with_training_step_and_bias_loss():
    torch.manual_seed(1)
    model = SkipNet(10, 0.5)
    crit = BiasLoss()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with FeatureTap(model) as tap:
        loss = crit(model(x), y, features=tap.features)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


class _Wrapper(nn.Module):
    """A plain wrapper that keeps the real model in ``.module`` (like DDP / DataParallel do)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_tap_through_wrappers(skipnet_m):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = skipnet_m.forward_features(x)
    wrapped = _Wrapper(_Wrapper(skipnet_m))
    assert unwrap_model(wrapped) is skipnet_m
    for model, layer in [
        (wrapped, None),
        (wrapped, "conv"),
        (wrapped, "module.module.conv"),
        (nn.DataParallel(skipnet_m), None),
    ]:
        with FeatureTap(model, layer) as tap:
            with torch.no_grad():
                model(x)
            assert tap.module is skipnet_m.conv
            assert torch.equal(tap.features, expected)


def test_tap_through_torch_compile():
    torch.manual_seed(2)
    model = SkipNet(10, 0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="eager")  # no C++ compiler needed
    with FeatureTap(compiled) as tap:
        with torch.no_grad():
            compiled(x)
            assert torch.equal(tap.features, model.forward_features(x))


def test_tap_remove_stops_capture(skipnet_m):
    x = torch.randn(1, 3, 32, 32)
    tap = FeatureTap(skipnet_m)
    with torch.no_grad():
        skipnet_m(x)
    assert tap.features is not None and tap.active
    tap.remove()
    tap.remove()  # idempotent
    tap.clear()
    with torch.no_grad():
        skipnet_m(x)
    assert tap.features is None and not tap.active
    assert len(skipnet_m.conv._forward_hooks) == 0

    with FeatureTap(skipnet_m) as tap2:
        pass
    with torch.no_grad():
        skipnet_m(x)
    assert tap2.features is None


def test_tap_errors(skipnet_m):
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        FeatureTap(skipnet_m, "nope")
    with pytest.raises(ValueError, match="no submodule"):
        FeatureTap(skipnet_m, "conv.7")
    with pytest.raises(ValueError, match="feature_layer"):
        FeatureTap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ValueError):
        FeatureTap(skipnet_m, "")
    # an explicit layer works on any model
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    with FeatureTap(seq, "1") as tap:
        out = seq(torch.randn(2, 3, 5, 5))
    assert tap.features.shape == (2, 4, 3, 3) and out.shape == (2, 4, 1, 1)
