"""tinygrad_lite/optim.py: the optimizers against reference formulas written out here in NumPy, their state dicts,
gradient clipping and the learning-rate schedule."""
import numpy as np
import pytest

from tinygrad_lite import Tensor, nn, optim


# ---------------------------------------------------------------------------------------------- optimizers
# Each optimizer minimizes loss = sum(c * (p - t)^2) over two parameters for a few steps; the reference
# recomputes the same gradient 2c(p - t) in NumPy and applies the update rule written out from the paper.
def _problem(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 2), (4,)]
    p0 = [rng.normal(size=s) for s in shapes]
    targets = [rng.normal(size=s) for s in shapes]
    scales = [rng.uniform(0.1, 3, size=s) for s in shapes]   # different curvature per coordinate

    def loss(params):
        return sum(((p - t) * (p - t) * c).sum() for p, t, c in zip(params, targets, scales))

    def grads(ps):
        return [2 * c * (p - t) for p, t, c in zip(ps, targets, scales)]
    return p0, loss, grads


def _run_engine(make_optimizer, steps, seed=0):
    p0, loss, _ = _problem(seed)
    params = [nn.Parameter(p.copy()) for p in p0]
    opt = make_optimizer(params)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
        trajectory.append([p.data.copy() for p in params])
    return trajectory


def adam_reference(steps, lr, betas, eps, weight_decay, decoupled, seed=0):
    """Kingma & Ba (2015), Algorithm 1, with bias-corrected moments. weight_decay: L2 (added to the
    gradient, torch.optim.Adam) or, decoupled, Loshchilov & Hutter (2019) AdamW: theta -= lr*wd*theta
    (their eta_t * lambda with eta_t = lr, lambda = wd) alongside the Adam step, both from theta_{t-1}."""
    p, _, grad_fn = _problem(seed)
    b1, b2 = betas
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    trajectory = []
    for t in range(1, steps + 1):
        g = grad_fn(p)
        new_p = []
        for i in range(len(p)):
            gi = g[i] if decoupled else g[i] + weight_decay * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi ** 2
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            step = lr * m_hat / (np.sqrt(v_hat) + eps)
            decay = lr * weight_decay * p[i] if decoupled else 0.0
            new_p.append(p[i] - step - decay)
        p = new_p
        trajectory.append([x.copy() for x in p])
    return trajectory


@pytest.mark.parametrize("cls, weight_decay", [(optim.Adam, 0.0), (optim.Adam, 0.1), (optim.AdamW, 0.1),
                                               (optim.AdamW, 0.0)])
def test_adam_and_adamw_match_the_reference(cls, weight_decay):
    # non-default betas/eps so that a swapped or ignored hyperparameter shows up
    hp = dict(lr=0.1, betas=(0.8, 0.95), eps=1e-3, weight_decay=weight_decay)
    engine = _run_engine(lambda ps: cls(ps, **hp), steps=3)
    reference = adam_reference(3, decoupled=cls is optim.AdamW, **hp)
    for step, (got, want) in enumerate(zip(engine, reference)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}")


def step_both_with_the_same_gradients(opts, a_params, b_params, rng):
    """Give both parameter lists the same random float32 gradients, step every optimizer, and require
    bit-identical weights."""
    for a, b in zip(a_params, b_params):
        a.grad = rng.standard_normal(a.shape).astype(np.float32)
        b.grad = a.grad.copy()
    for opt in opts:
        opt.step()
    for a, b in zip(a_params, b_params):
        assert a.data.dtype == b.data.dtype == np.float32
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("cls, weight_decay", [(optim.Adam, 0.0), (optim.Adam, 0.1), (optim.AdamW, 0.1)])
def test_adam_with_a_numpy_float64_lr_stays_float32(cls, weight_decay):
    """A learning rate computed with NumPy is a float64 scalar: the update must still be float32 arithmetic,
    bit for bit the update with the same lr as a Python float."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    a = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    b = [nn.Parameter(p.data.copy()) for p in a]
    opts = cls(a, lr=0.1, weight_decay=weight_decay), cls(b, lr=np.float64(0.1), weight_decay=weight_decay)
    for _ in range(4):
        step_both_with_the_same_gradients(opts, a, b, rng)


def test_optimizer_state_dict_round_trip_continues_bit_for_bit(tmp_path):
    """Save the optimizer after two steps (through an .npz, as a checkpoint does), load it into a fresh one,
    and step both: the weights stay identical, as if training had never stopped."""
    rng = np.random.default_rng(2)
    shapes = [(3, 4), (4,)]
    a = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    b = [nn.Parameter(p.data.copy()) for p in a]
    opt_a, opt_b = optim.AdamW(a, lr=0.1), optim.AdamW(b, lr=0.1)
    for _ in range(2):
        step_both_with_the_same_gradients((opt_a, opt_b), a, b, rng)
    np.savez(tmp_path / "optim.npz", **opt_a.state_dict())
    assert sorted(opt_a.state_dict()) == ["exp_avg.0", "exp_avg.1", "exp_avg_sq.0", "exp_avg_sq.1", "lr", "step_count"]
    opt_b = optim.AdamW(b, lr=0.5)                            # fresh: wrong lr, no moments, step 0 ...
    with np.load(tmp_path / "optim.npz") as state:
        opt_b.load_state_dict(dict(state))                    # ... until loaded
    assert opt_b.step_count == 2 and opt_b.lr == 0.1
    for _ in range(2):
        step_both_with_the_same_gradients((opt_a, opt_b), a, b, rng)


def test_adam_updates_the_callers_arrays_in_place():
    """As in PyTorch, the optimizer never swaps a parameter's array: one taken from p.data before the optimizer
    was built keeps seeing the updates, and one put in later (p.data = ...) is the one updated."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    ref = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    params = [nn.Parameter(p.data.copy()) for p in ref]
    before = [p.data for p in params]
    opts = optim.AdamW(ref, lr=0.1), optim.AdamW(params, lr=0.1)
    for step in range(3):
        if step == 1:
            params[1].data = params[1].data.copy()            # a new array, from now on the one to update
            before[1] = params[1].data
        step_both_with_the_same_gradients(opts, ref, params, rng)
        assert all(p.data is b for p, b in zip(params, before))


def test_adam_and_adamw_differ_with_weight_decay():
    # the reference test above covers each rule; this makes sure the two rules are not the same rule
    a = _run_engine(lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1), steps=3)
    w = _run_engine(lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.1), steps=3)
    assert not np.allclose(a[-1][0], w[-1][0])


def sgd_reference(steps, lr, momentum, weight_decay, seed=0):
    """PyTorch's SGD: d = g + wd * p;  buf = momentum * buf + d (buf = d on step 1);  p -= lr * buf."""
    p, _, grad_fn = _problem(seed)
    buf = None
    trajectory = []
    for _ in range(steps):
        d = [gi + weight_decay * pi for gi, pi in zip(grad_fn(p), p)]
        buf = d if buf is None or momentum == 0 else [momentum * b + di for b, di in zip(buf, d)]
        p = [pi - lr * b for pi, b in zip(p, buf)]
        trajectory.append(p)
    return trajectory


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.05)])
def test_sgd_matches_the_reference(momentum, weight_decay):
    engine = _run_engine(lambda ps: optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay), steps=5)
    reference = sgd_reference(5, 0.05, momentum, weight_decay)
    for got, want in zip(engine, reference):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make_optimizer, steps", [
    (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), 300),
    (lambda ps: optim.Adam(ps, lr=0.05), 1000),
])
def test_optimizers_minimize_a_quadratic(make_optimizer, steps):
    p0, loss, grad_fn = _problem()
    final = _run_engine(make_optimizer, steps)[-1]
    # the minimum is p = t, with loss 0 and zero gradient
    assert loss([Tensor(p) for p in p0]).item() > 1.0
    assert loss([Tensor(p) for p in final]).item() < 1e-6
    assert max(np.abs(g).max() for g in grad_fn(final)) < 1e-2


def test_optimizer_skips_parameters_without_grad():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.Adam([a, b], lr=0.1)
    (a * a).sum().backward()
    opt.step()
    assert not np.array_equal(a.data, np.ones(2))
    np.testing.assert_array_equal(b.data, np.ones(2))


def test_clip_grad_norm():
    a, b, c = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(3))
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])   # joint norm sqrt(9 + 16 + 144) = 13; c has none
    assert optim.clip_grad_norm_([a, b, c], max_norm=6.5) == pytest.approx(13.0, rel=1e-15)  # pre-clip norm
    np.testing.assert_allclose(np.sqrt(np.sum(a.grad ** 2) + np.sum(b.grad ** 2)), 6.5, rtol=1e-6)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-6)  # scaled together: the direction is kept
    np.testing.assert_allclose(b.grad, [6.0], rtol=1e-6)
    assert c.grad is None
    # under the limit: returned, nothing changed
    assert optim.clip_grad_norm_([a, b], max_norm=100.0) == pytest.approx(6.5, rel=1e-6)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-6)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_warmup_decay_shape(decay):
    total, warmup, floor = 100, 10, 0.1
    f = [optim.warmup_decay(s, total, warmup_steps=warmup, decay=decay, min_ratio=floor) for s in range(total + 5)]
    # warmup: linear, reaching 1 on its last step
    np.testing.assert_allclose(f[:warmup], np.arange(1, warmup + 1) / warmup, rtol=1e-15)
    assert f[warmup] == pytest.approx(1.0)
    # decay: never increasing, halfway at the midpoint, min_ratio at the end and after
    assert all(x >= y for x, y in zip(f[warmup:], f[warmup + 1:]))
    assert f[warmup + (total - warmup) // 2] == pytest.approx(floor + (1 - floor) / 2)
    assert f[total] == pytest.approx(floor) and f[-1] == pytest.approx(floor)
    if decay == "cosine":  # flat at both ends (slope 0), unlike linear
        assert f[warmup] - f[warmup + 1] < f[warmup + 40] - f[warmup + 41]


# ----------------------------------------------------------------------------- the weights' moving average
def test_ema_follows_its_formula_with_the_warmed_up_decay():
    """shadow_n = d_n shadow_{n-1} + (1 - d_n) p_n with d_n = min(decay, (1 + n) / (10 + n)), from shadow_0 = the
    weights at the start: written out here for random weight sequences, float64."""
    rng = np.random.default_rng(3)
    params = [nn.Parameter(rng.standard_normal(s)) for s in [(3, 2), (5,)]]
    reference = [p.data.copy() for p in params]
    ema = optim.ExponentialMovingAverage(params, decay=0.9)
    for n in range(1, 40):
        for p in params:
            p.data[...] = rng.standard_normal(p.shape)
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        reference = [d * r + (1 - d) * p.data for r, p in zip(reference, params)]
    for s, r in zip(ema.shadow, reference):
        np.testing.assert_allclose(s, r, rtol=1e-12)


def test_ema_average_parameters_swaps_in_the_average_and_back_even_on_error():
    rng = np.random.default_rng(4)
    params = [nn.Parameter(rng.standard_normal((2, 3)).astype(np.float32))]
    ema = optim.ExponentialMovingAverage(params, decay=0.5)
    array, trained = params[0].data, params[0].data.copy()
    ema.shadow[0][...] = 7.0
    with pytest.raises(RuntimeError):
        with ema.average_parameters():
            assert np.all(params[0].data == 7.0) and params[0].data is array      # in place: views stay views
            raise RuntimeError("inside")
    assert np.array_equal(params[0].data, trained) and params[0].data is array


def test_ema_state_dict_round_trip_continues_bit_for_bit(tmp_path):
    rng = np.random.default_rng(5)
    a = [nn.Parameter(rng.standard_normal((4, 3)).astype(np.float32))]
    b = [nn.Parameter(a[0].data.copy())]
    ema_a = optim.ExponentialMovingAverage(a, decay=0.99)
    for _ in range(3):
        a[0].data += rng.standard_normal((4, 3)).astype(np.float32)
        ema_a.update()
    np.savez(tmp_path / "ema.npz", **ema_a.state_dict())
    b[0].data[...] = a[0].data
    ema_b = optim.ExponentialMovingAverage(b, decay=0.5)                 # fresh: another decay, count 0 ...
    with np.load(tmp_path / "ema.npz") as state:
        ema_b.load_state_dict(dict(state))                                # ... until loaded
    assert ema_b.num_updates == 3 and ema_b.decay == 0.99
    for _ in range(3):
        step = rng.standard_normal((4, 3)).astype(np.float32)
        a[0].data += step
        b[0].data += step
        ema_a.update()
        ema_b.update()
    assert np.array_equal(ema_a.shadow[0], ema_b.shadow[0]) and ema_b.shadow[0].dtype == np.float32
    with pytest.raises(ValueError, match="decay must be in"):
        optim.ExponentialMovingAverage(a, decay=1.0)
