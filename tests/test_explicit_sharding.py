"""Ops under a mesh with Explicit axis types (``jax.make_mesh``'s default in recent JAX).

Under Explicit axes every intermediate must carry a sharding consistent with its operands; an op
that materialises an unsharded array (e.g. ``broadcast_to`` of a scalar) fails there although it
works under Auto axes.
"""

import textwrap

from tests.utils import run_on_8_cpu_devices

_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    spec = P("data", "model")
    s = NamedSharding(mesh, spec)
    x = jax.device_put(jnp.arange(64.0).reshape(8, 8) / 64, s)
    m = jax.device_put(jnp.arange(64).reshape(8, 8) % 3 != 0, s)
    cases = {
        "hadamard": lambda x, m: hj.hadamard(x, m),
        "hadamard_n grad": lambda x, m: jax.grad(lambda x: hj.hadamard_n(x, x, x).sum())(x),
        "swiglu grad": lambda x, m: jax.grad(lambda x: hj.swiglu(x, x).sum())(x),
        "highway jvp": lambda x, m: jax.jvp(lambda x: hj.highway(x, x, x), (x,), (x,))[1],
        "apply_mask": lambda x, m: hj.apply_mask(x, m),
        "apply_mask grad": lambda x, m: jax.grad(lambda x: hj.apply_mask(x, m, fill=1.0).sum())(x),
        "apply_mask jvp": lambda x, m: jax.jvp(lambda x: hj.apply_mask(x, m), (x,), (x,))[1],
        # A replicated zeros start with time- and state-sharded inputs (issue 22, item 6).
        "linear_scan zeros h0 grad": lambda x, m: jax.grad(
            lambda x: hj.linear_scan(x, x, h0=jnp.zeros(8)).sum()
        )(x),
        "log_linear_scan zeros h0": lambda x, m: hj.log_linear_scan(x, x, log_h0=jnp.zeros(8)),
    }
    with jax.set_mesh(mesh):
        for name, fn in cases.items():
            out = jax.jit(fn)(x, m)
            assert out.sharding.spec == spec, (name, out.sharding.spec)
            print(name, "OK")
    print("EXPLICIT OK")
    """
)


def test_ops_under_explicit_mesh_axes():
    run_on_8_cpu_devices(_SCRIPT, "EXPLICIT OK")
