"""The tracked suite: the figures the regression command gates on, two processes of measurement.

Every figure here is lower-is-better, as asv reads every benchmark:

* ``Cost``: XLA's compiled ``cost_analysis()`` of the forward+backward (``hadamard``: forward
  alone too) in hadamard_jax's implementation: bytes accessed, flops, transcendentals;
* ``SavedResidual``: bytes reverse mode keeps for the backward pass of each gating op;
* ``Transcendentals``: transcendentals per element of each gating op's fwd+bwd, ours and plain;
* ``TempMemory``: ``memory_analysis()`` temp bytes of three compiled training steps;
* ``TimeRatio``: CPU time of hadamard_jax's kernel over the plain-JAX composition, the two timed
  alternately in one process (the fastest samples of each side).

The first three are deterministic (compiled from abstract shapes) and gated exactly; the ratio is
gated with a factor (``figures.TIME_FACTOR``). ``Throughput`` (GB/s, higher is better) is for
the graphs only and is not gated. All figures come from two ``setup_cache`` measurements
(:mod:`benchmarks.figures`); each benchmark only reads its number, in a process that never
imports JAX.
"""

from __future__ import annotations

from . import common, figures


class _Deterministic:
    """One process computes every deterministic figure; the classes below read them."""

    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        return figures.deterministic()

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, cache, *key):
        common.skip_if_missing(self._value(cache, *key))

    def _value(self, cache, *key):
        raise NotImplementedError


class Cost(_Deterministic):
    """Compiled ``cost_analysis()`` of one call, hadamard_jax's implementation.

    ``hadamard``: forward, ``(2048, 2048)`` float32; ``hadamard_vjp``: forward and both
    cotangents; the gating ops: forward and every cotangent, ``(1024, 1024)`` float32.
    """

    params = [figures.COSTED]
    param_names = ["kernel"]

    def _value(self, cache, kernel):
        return cache[("cost_bytes", kernel)]

    def track_cost_bytes(self, cache, kernel):
        return cache[("cost_bytes", kernel)]

    track_cost_bytes.unit = "bytes"

    def track_cost_flops(self, cache, kernel):
        return cache[("cost_flops", kernel)]

    track_cost_flops.unit = "flops"

    def track_cost_transcendentals(self, cache, kernel):
        return cache[("cost_transcendentals", kernel)]

    track_cost_transcendentals.unit = "transcendentals"


class SavedResidual(_Deterministic):
    """Bytes reverse mode keeps for the backward pass of a gating op, ``(1024, 1024)`` float32."""

    params = [figures.GATING]
    param_names = ["op"]

    def _value(self, cache, op):
        return cache[("saved_residual_bytes", op)]

    def track_saved_residual_bytes(self, cache, op):
        return cache[("saved_residual_bytes", op)]

    track_saved_residual_bytes.unit = "bytes"


class Transcendentals(_Deterministic):
    """Transcendentals per element of a gating op's fwd+bwd, ``(1024, 1024)`` float32.

    ``hadamard_jax``: the library's rule, which keeps only the inputs and so evaluates the
    activation again in the backward pass; ``plain``: the ``jax.nn`` composition, which keeps its
    intermediates instead. From compiled ``cost_analysis()``, divided by the element count.
    """

    params = [figures.GATING, figures.IMPLS]
    param_names = ["op", "impl"]

    def _value(self, cache, op, impl):
        return cache[("transcendentals_per_element", op, impl)]

    def track_transcendentals_per_element(self, cache, op, impl):
        return cache[("transcendentals_per_element", op, impl)]

    track_transcendentals_per_element.unit = "transcendentals"


class TempMemory(_Deterministic):
    """Compiled temp bytes of one training step (``jax.jit(jax.value_and_grad(loss))``).

    ``ffn_swiglu``/``ffn_geglu``: 8 scanned gated-FFN layers with hadamard_jax's gate
    (batch 2048, d 512, h 2048; :mod:`hadamard_jax.bench.ffn_stack`); ``flax_gated_mlp``: the
    NNX ``GatedMLP`` stack of the same size (:mod:`hadamard_jax.bench.flax_stack`).
    """

    params = [figures.STEPS]
    param_names = ["step"]

    def _value(self, cache, step):
        return cache[("temp_bytes", step)]

    def track_temp_bytes(self, cache, step):
        return cache[("temp_bytes", step)]

    track_temp_bytes.unit = "bytes"


class _Timed:
    """One process times every kernel against plain JAX, alternately; the classes read it."""

    timeout = common.SETUP_CACHE_TIMEOUT

    def setup_cache(self):
        return figures.timings()

    setup_cache.timeout = common.SETUP_CACHE_TIMEOUT

    def setup(self, cache, kernel):
        common.skip_if_missing(cache[kernel])


class TimeRatio(_Timed):
    """CPU time of hadamard_jax over plain JAX, fastest samples of each (lower is better).

    96 alternated rounds over 8 placements of the operands (:func:`benchmarks.figures.timings`);
    the ratio of the means of the 8 fastest samples of each side (:func:`benchmarks.figures.ratio`).
    Plain: ``jnp.multiply`` for ``hadamard`` (forward, ``(2048, 2048)``) and ``hadamard_vjp``
    (forward+backward), the ``jax.nn`` composition for the gating ops (forward+backward,
    ``(1024, 1024)``), the plain layers for the training steps (batch 128, d 256, h 1024, 4
    layers; ``flax_gated_mlp``: ``nnx.Linear`` layers).
    """

    params = [figures.TIMED]
    param_names = ["kernel"]

    def track_time_ratio(self, cache, kernel):
        return figures.ratio(cache[kernel])

    track_time_ratio.unit = "x plain JAX"


class Throughput(_Timed):
    """GB/s of hadamard_jax's kernel (bytes counted as STREAM counts them, best wall sample).

    For the graphs only: higher is better here, asv shows lower as better, and the regression
    command does not gate it.
    """

    params = [figures.COSTED]
    param_names = ["kernel"]

    def track_gbps(self, cache, kernel):
        return figures.work_bytes(kernel) / min(cache[kernel]["ours_wall"]) / 1e9

    track_gbps.unit = "GB/s"
