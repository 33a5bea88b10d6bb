"""Adapter ops (LoHa, HiRA, DoRA) against ports of HF peft's formulas.

The ports keep peft's torch layout (weights ``[out, in]``, ``F.linear(x, W) = x @ W.T``) so the
layout mapping stated in the docstrings is tested too:

* ``tuners/loha/layer.py``: ``HadaWeight``: ``((w1a @ w1b) * (w2a @ w2b)) * scale``, applied
  as ``F.linear(x, delta)``;
* ``tuners/hira/layer.py``: ``F.linear(x, W * (A.T @ B.T).T)``;
* ``tuners/lora/dora.py``: ``DoraLinearLayer.forward``: ``(mag / ||W + s B A||_dim1 - 1) *
  base + mag / norm * lora * s`` added to ``base``, the norm detached.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hadamard_jax import dora_matmul, dora_norm, hira_matmul, loha_delta, loha_matmul
from hadamard_jax._src import adapters
from tests.utils import check_grads, normal, only_arguments_saved, saved_residuals


def _linear(x, weight):  # torch.nn.functional.linear without bias
    return x @ weight.T


def peft_loha(x, w1a, w1b, w2a, w2b, scale):
    return _linear(x, ((w1a @ w1b) * (w2a @ w2b)) * scale)


def peft_hira(x, weight, hira_a, hira_b):
    prod_ab = hira_a.T @ hira_b.T
    return _linear(x, weight * prod_ab.T)


def peft_dora(x, weight, lora_a, lora_b, magnitude, scaling, detach=True):
    lora_weight = lora_b @ lora_a
    if detach:
        lora_weight = jax.lax.stop_gradient(lora_weight)
    norm = jnp.linalg.norm(weight + scaling * lora_weight, axis=1)
    if detach:
        norm = jax.lax.stop_gradient(norm)
    mag_norm_scale = (magnitude / norm).reshape(1, -1)
    base = _linear(x, weight)
    lora = _linear(_linear(x, lora_a), lora_b)
    return base + (mag_norm_scale - 1) * base + mag_norm_scale * lora * scaling


# ours -> peft argument order and layout
def _loha_peft(x, a1, b1, a2, b2, scale=0.5):
    return peft_loha(x, b1.T, a1.T, b2.T, a2.T, scale)


def _hira_peft(x, w0, a, b):
    return peft_hira(x, w0.T, a.T, b.T)


def _dora_peft(x, w, a, b, m, scale=0.5, detach=True):
    return peft_dora(x, w.T, a.T, b.T, m, scale, detach)


def _loha_args(dtype=np.float32, batch=(5,), n_in=6, n_out=7, r1=2, r2=3):
    return (
        normal(0, (*batch, n_in), dtype),
        normal(1, (n_in, r1), dtype, 0.5),
        normal(2, (r1, n_out), dtype, 0.5),
        normal(3, (n_in, r2), dtype, 0.5),
        normal(4, (r2, n_out), dtype, 0.5),
    )


def _hira_args(dtype=np.float32, batch=(5,), n_in=6, n_out=7, r=2):
    return (
        normal(5, (*batch, n_in), dtype),
        normal(6, (n_in, n_out), dtype),
        normal(7, (n_in, r), dtype, 0.5),
        normal(8, (r, n_out), dtype, 0.5),
    )


def _dora_args(dtype=np.float32, batch=(5,), n_in=6, n_out=7, r=2):
    return (
        normal(9, (*batch, n_in), dtype),
        normal(10, (n_in, n_out), dtype),
        normal(11, (n_in, r), dtype, 0.5),
        normal(12, (r, n_out), dtype, 0.5),
        normal(13, (n_out,), dtype, 1.0, 2.0),
    )


def _f64(args):
    return [np.asarray(a, np.float64) for a in args]


CASES = {
    "loha_kr": (lambda *a: loha_matmul(*a, scale=0.5, path="khatri_rao"), _loha_peft, _loha_args),
    "loha_form": (lambda *a: loha_matmul(*a, scale=0.5, path="form"), _loha_peft, _loha_args),
    "hira_form": (lambda *a: hira_matmul(*a, path="form"), _hira_peft, _hira_args),
    "hira_sum": (lambda *a: hira_matmul(*a, path="sum"), _hira_peft, _hira_args),
    "dora": (lambda *a: dora_matmul(*a, scale=0.5), _dora_peft, _dora_args),
    "dora_grad_norm": (
        lambda *a: dora_matmul(*a, scale=0.5, detach_norm=False),
        lambda *a: _dora_peft(*a, detach=False),
        _dora_args,
    ),
}


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_values_and_grads_match_peft(case, dtype):
    ours, peft, make = CASES[case]
    args = make(dtype)
    out = jax.jit(ours)(*args)
    assert out.dtype == jnp.dtype(dtype) and out.shape == (5, 7)
    with jax.enable_x64(True):
        ref = np.asarray(peft(*[jnp.asarray(a) for a in _f64(args)]))
    tol = 1e-5 if dtype == np.float32 else 2e-2
    scale = np.abs(ref).max()
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, rtol=tol, atol=tol * scale)

    ct = normal(20, out.shape, np.float32)
    argnums = tuple(range(len(args)))
    grads = jax.jit(jax.grad(lambda *a: jnp.vdot(ours(*a).astype(jnp.float32), ct), argnums))(*args)
    with jax.enable_x64(True):
        ref_grads = jax.grad(
            lambda *a: jnp.vdot(peft(*a), jnp.asarray(np.asarray(ct, np.float64))), argnums
        )(*[jnp.asarray(a) for a in _f64(args)])
    for g, r, a in zip(grads, ref_grads, args):
        assert g.dtype == a.dtype and g.shape == a.shape
        r = np.asarray(r)
        np.testing.assert_allclose(
            np.asarray(g, np.float64), r, rtol=tol, atol=tol * max(np.abs(r).max(), 1)
        )


@pytest.mark.parametrize(
    "case", ["loha_kr", "loha_form", "hira_form", "hira_sum", "dora_grad_norm"]
)
def test_check_grads_order_2(x64, case):
    ours, _, make = CASES[case]
    args = _f64(make(batch=(2,), n_in=3, n_out=2))
    check_grads(ours, args, order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)


def test_loha_delta_matches_peft_and_check_grads(x64):
    a1, b1, a2, b2 = _f64(_loha_args(n_in=3, n_out=2))[1:]
    out = loha_delta(a1, b1, a2, b2, scale=0.5)
    np.testing.assert_allclose(out, (((b1.T @ a1.T) * (b2.T @ a2.T)) * 0.5).T, rtol=1e-12)
    check_grads(lambda *a: loha_delta(*a, scale=0.5), (a1, b1, a2, b2), 2, modes=["fwd", "rev"])


def test_dora_detached_forward_mode_matches_stop_gradient_reference():
    args = _dora_args()
    tangents = tuple(normal(30 + i, a.shape) for i, a in enumerate(args))
    out, t = jax.jvp(lambda *a: dora_matmul(*a, scale=0.5), args, tangents)
    ref_out, ref_t = jax.jvp(_dora_peft, args, tangents)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t, ref_t, rtol=1e-4, atol=1e-4)


def test_dora_norm_equals_formed_norm_and_magnitude_init_is_identity():
    _, w, a, b, _ = _dora_args()
    n = dora_norm(w, a, b, scale=0.5)
    np.testing.assert_allclose(n, jnp.linalg.norm(w + 0.5 * a @ b, axis=0), rtol=1e-5)
    # m = ||W||_col and B = 0: DoRA is the base layer.
    x = normal(40, (3, 6))
    zero_b = jnp.zeros_like(b)
    y = dora_matmul(x, w, a, zero_b, dora_norm(w, a, zero_b))
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def test_leading_batch_axes():
    x, *f = _loha_args(batch=(2, 3))
    np.testing.assert_allclose(
        loha_matmul(x, *f), x @ ((f[0] @ f[1]) * (f[2] @ f[3])), rtol=1e-5, atol=1e-5
    )
    x, w0, a, b = _hira_args(batch=(2, 3))
    for path in ("form", "sum"):
        np.testing.assert_allclose(
            hira_matmul(x, w0, a, b, path=path), x @ (w0 * (a @ b)), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("path", ["khatri_rao", "form"])
def test_loha_saves_only_inputs(capsys, path):
    x, *f = _loha_args()
    lines = saved_residuals(capsys, lambda x, *f: loha_matmul(x, *f, path=path), x, *f)
    assert lines and only_arguments_saved(lines), lines


@pytest.mark.parametrize("path", ["form", "sum"])
def test_hira_saves_only_inputs_and_frozen_w0_is_free(capsys, path):
    x, w0, a, b = _hira_args()
    lines = saved_residuals(capsys, lambda *args: hira_matmul(*args, path=path), x, w0, a, b)
    assert lines and only_arguments_saved(lines), lines

    # A frozen w0 has a symbolic-zero tangent: the jvp program has no w0-tangent term.
    def jvp_program(tangent_w0):
        def f(a, tw0):
            tw = jnp.zeros_like(w0) if tw0 is None else tw0
            primals, tangents = (w0, a), (tw, a)
            if tw0 is None:
                return jax.jvp(lambda a: hira_matmul(x, w0, a, b, path=path), (a,), (a,))
            return jax.jvp(lambda w0, a: hira_matmul(x, w0, a, b, path=path), primals, tangents)

        return str(jax.make_jaxpr(f)(a, tangent_w0))

    assert len(jvp_program(None)) < len(jvp_program(w0))


def test_dora_saves_inputs_norms_and_output_no_in_out_array(capsys):
    x, w, a, b, m = _dora_args()
    lines = saved_residuals(capsys, lambda *args: dora_matmul(*args), x, w, a, b, m)
    others = [s for s in lines if "from the argument" not in s]
    # Besides the arguments: the [out] norms and the un-normalised output [5, out] only.
    assert len(others) == 2 and all(s.startswith(("f32[7]", "f32[5,7]")) for s in others), lines
    # m frozen: no output kept.
    lines = saved_residuals(capsys, lambda x, w, a, b: dora_matmul(x, w, a, b, m), x, w, a, b)
    assert not any(s.startswith("f32[5,7]") for s in lines), lines


def test_costs_choose_khatri_rao_for_small_ranks():
    assert adapters._loha_path("auto", 2048, 4096, 4096, 8, 8) == "khatri_rao"
    assert adapters._loha_path("auto", 4096, 64, 64, 64, 64) == "form"
    costs = adapters.hira_costs(2048, 4096, 4096, 8)
    assert costs["form"][0] < costs["sum"][0] and costs["sum"][1] < costs["form"][1]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: loha_matmul(np.ones((2, 5)), *_loha_args()[1:]), "x.shape"),
        (
            lambda: loha_matmul(
                np.ones((2, 6)), np.ones((6, 2)), np.ones((3, 7)), *_loha_args()[3:]
            ),
            "b1.shape",
        ),
        (
            lambda: loha_matmul(
                np.ones((2, 6)), *_loha_args()[1:3], np.ones((5, 3)), np.ones((3, 7))
            ),
            "a2.shape",
        ),
        (lambda: loha_matmul(np.ones((2, 6)), *_loha_args()[1:], path="fast"), "path"),
        (lambda: loha_delta(np.ones(6), np.ones((1, 7)), np.ones((6, 1)), np.ones((1, 7))), "a1"),
        (
            lambda: hira_matmul(np.ones((2, 6)), np.ones((6, 7)), np.ones((6, 2)), np.ones((2, 8))),
            "b.shape",
        ),
        (
            lambda: hira_matmul(np.ones((2, 6)), np.ones((6, 7)), np.ones((5, 2)), np.ones((2, 7))),
            "a.shape",
        ),
        (lambda: dora_matmul(*_dora_args()[:4], np.ones(6)), "m.shape"),
        (lambda: dora_matmul(*_dora_args(), scale=float("nan")), "scale"),
    ],
)
def test_bad_shapes_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types():
    with pytest.raises(TypeError, match="floating"):
        loha_matmul(
            np.ones((2, 3), np.int32),
            *(np.ones(s, np.int32) for s in [(3, 1), (1, 2), (3, 1), (1, 2)]),
        )
    with pytest.raises(TypeError, match="detach_norm"):
        dora_matmul(*_dora_args(), detach_norm=1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="'x'"):
        hira_matmul(None, *_hira_args()[1:])  # pyright: ignore[reportArgumentType]


def test_bench_rows_small():
    from hadamard_jax.bench import adapters as bench

    (row,) = bench.rows(["loha"], n=128, r=2, batch=32, rounds=1)
    assert row["temp_ours"] < row["temp_peft"] and row["flops_ours"] < row["flops_peft"]
    assert only_arguments_saved(row["residuals_ours"])
    assert not only_arguments_saved(row["residuals_peft"])
    assert len(bench.format_rows([row])) == 5


@settings(max_examples=10)
@given(
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    n_in=st.integers(1, 5),
    n_out=st.integers(1, 5),
    r1=st.integers(1, 3),
    r2=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_loha_paths_match_numpy(batch, n_in, n_out, r1, r2, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, n_in))
    a1, a2 = rng.standard_normal((n_in, r1)), rng.standard_normal((n_in, r2))
    b1, b2 = rng.standard_normal((r1, n_out)), rng.standard_normal((r2, n_out))
    expected = x @ ((a1 @ b1) * (a2 @ b2))
    args = [np.float32(a) for a in (x, a1, b1, a2, b2)]
    for path in ("khatri_rao", "form"):
        out = loha_matmul(*args, path=path)
        assert out.shape == (*batch, n_out)
        np.testing.assert_allclose(
            out, expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(expected).max())
        )


def test_variables_vmap_and_hessian():
    from flax import nnx

    x, a1, b1, a2, b2 = _loha_args()
    ours = loha_matmul(x, nnx.Param(a1), b1, nnx.Param(a2), b2)
    np.testing.assert_allclose(ours, loha_matmul(x, a1, b1, a2, b2), rtol=1e-6)
    g = jax.grad(lambda p: loha_matmul(x, p, b1, a2, b2).sum())(nnx.Param(a1))
    assert np.asarray(jax.tree.leaves(g)[0]).shape == a1.shape
    # vmap over a stack of adapters (e.g. one per task).
    stacked = jnp.stack([a1, 2 * a1])
    out = jax.vmap(lambda a: hira_matmul(x, normal(6, (6, 7)), a, b1))(stacked[..., :2])
    np.testing.assert_allclose(out[1], 2 * out[0], rtol=1e-5, atol=1e-5)
    # Hessian of a DoRA loss in the magnitude (forward over reverse).
    _, w, a, b, m = _dora_args()
    h = jax.hessian(lambda m: jnp.sum(dora_matmul(x, w, a, b, m, detach_norm=False) ** 2))(m)
    z = x @ w + (x @ a) @ b
    n = jnp.linalg.norm(w + a @ b, axis=0)
    np.testing.assert_allclose(h, 2 * jnp.diag(jnp.sum(z * z, 0) / n**2), rtol=1e-4, atol=1e-4)
