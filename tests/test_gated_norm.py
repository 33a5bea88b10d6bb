"""Tests of gated_rms_norm: both orders, every plain gate, derivatives, residuals and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hadamard_jax as hj
from hadamard_jax._src.gates import GATES
from tests.test_glu import PLAIN
from tests.utils import check_grads, normal, saved_residuals

EPS = 1e-6
# The gates without a value transform (those gated_rms_norm takes).
ACTIVATIONS = [name for name, gate in GATES.items() if not gate.clamps_value]


def _plain(x, g, s, *, activation="swiglu", before=True, eps=EPS):
    """The plain jax.nn composition (what flash-linear-attention and Mamba2 write)."""
    act = PLAIN[activation](g)

    def rms(z):
        return z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + eps)

    return rms(x) * s * act if before else rms(x * act) * s


def _args(shape=(2, 3, 8), dtype=jnp.float32, seed=0):
    return (
        normal(10 * seed, shape, dtype),
        normal(10 * seed + 1, shape, dtype),
        normal(10 * seed + 2, shape[-1:], dtype, scale=0.1, loc=1.0),
    )


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_values_and_gradients_match_plain(activation, before):
    args = _args()
    ours = lambda *a: hj.gated_rms_norm(*a, activation=activation, norm_before_gate=before)  # noqa: E731
    plain = lambda *a: _plain(*a, activation=activation, before=before)  # noqa: E731
    with jax.numpy_rank_promotion("allow"):
        expected = plain(*args)
    np.testing.assert_allclose(jax.jit(ours)(*args), expected, rtol=2e-5, atol=2e-6)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))  # noqa: E731
    with jax.numpy_rank_promotion("allow"):
        ref = jax.grad(loss(plain), argnums=(0, 1, 2))(*args)
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(*args)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("before", [True, False])
def test_check_grads_order_2_both_modes(x64, before):
    args = tuple(np.asarray(a, np.float64) for a in _args((2, 5)))
    f = lambda *a: hj.gated_rms_norm(*a, norm_before_gate=before)  # noqa: E731
    check_grads(f, args, order=2, modes=["fwd", "rev"])


def test_saved_residuals_are_inputs_and_one_value_per_row(capsys):
    x, g, s = _args((4, 6, 16))
    for before in (True, False):
        loss = lambda x, g, s, b=before: jnp.sum(hj.gated_rms_norm(x, g, s, norm_before_gate=b))  # noqa: E731
        lines = saved_residuals(capsys, loss, x, g, s)
        arguments = [line for line in lines if "from the argument" in line]
        others = [line for line in lines if "from the argument" not in line]
        assert len(arguments) == 3, lines
        # Besides the inputs, only the per-row reciprocal RMS: [4, 6, 1].
        assert len(others) == 1 and "[4,6,1]" in others[0], lines
    with jax.numpy_rank_promotion("allow"):
        plain = saved_residuals(capsys, lambda x, g, s: jnp.sum(_plain(x, g, s)), x, g, s)
    assert len(plain) > 4, plain  # the plain composition keeps full-size intermediates too


def test_bf16_computes_in_float32_and_returns_bf16():
    args = _args(dtype=jnp.bfloat16)
    out = hj.gated_rms_norm(*args)
    assert out.dtype == jnp.bfloat16
    with jax.numpy_rank_promotion("allow"):
        ref = _plain(*(a.astype(jnp.float32) for a in args))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=2**-7, atol=2**-7)
    grads = jax.grad(lambda *a: jnp.sum(hj.gated_rms_norm(*a).astype(jnp.float32)), (0, 1, 2))(
        *args
    )
    assert all(g.dtype == jnp.bfloat16 for g in grads)


def test_transforms():
    x, g, s = _args((3, 8))
    f = lambda x, g, s: hj.gated_rms_norm(x, g, s)  # noqa: E731
    np.testing.assert_allclose(jax.vmap(f, (0, 0, None))(x, g, s), f(x, g, s), rtol=1e-6)
    _, t = jax.jvp(f, (x, g, s), (x, g, s))
    with jax.numpy_rank_promotion("allow"):
        _, t_ref = jax.jvp(_plain, (x, g, s), (x, g, s))
    np.testing.assert_allclose(t, t_ref, rtol=1e-4, atol=1e-5)
    hess = jax.hessian(lambda x: jnp.sum(f(x, g[:1], s) ** 2))(x[:1])
    assert np.isfinite(hess).all()

    def scanned(x):
        def body(c, _):
            return jax.checkpoint(f)(c, g, s), None

        return jnp.sum(jax.lax.scan(body, x, None, length=3)[0])

    def scanned_plain(x):
        def body(c, _):
            return _plain(c, g, s), None

        return jnp.sum(jax.lax.scan(body, x, None, length=3)[0])

    with jax.numpy_rank_promotion("allow"):
        ref = jax.grad(scanned_plain)(x)
    np.testing.assert_allclose(jax.jit(jax.grad(scanned))(x), ref, rtol=1e-4, atol=1e-5)


def test_errors_name_the_argument():
    x, g, s = _args((2, 4))
    with pytest.raises(ValueError, match=r"gate.shape=\(2, 3\) must equal x.shape=\(2, 4\)"):
        hj.gated_rms_norm(x, g[:, :3], s)
    with pytest.raises(ValueError, match=r"scale.shape=\(3,\) must be \(4,\)"):
        hj.gated_rms_norm(x, g, s[:3])
    with pytest.raises(ValueError, match="scalar"):
        hj.gated_rms_norm(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="eps must be a number > 0"):
        hj.gated_rms_norm(x, g, s, eps=0.0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        hj.gated_rms_norm(x, g, s, activation="swish")
    with pytest.raises(ValueError, match="transforms its value"):
        hj.gated_rms_norm(x, g, s, activation="clamped_swiglu")
    with pytest.raises(TypeError, match="norm_before_gate must be a static bool"):
        hj.gated_rms_norm(x, g, s, norm_before_gate="yes")
    with pytest.raises(TypeError, match="complex"):
        hj.gated_rms_norm(x.astype(jnp.complex64), g, s)
