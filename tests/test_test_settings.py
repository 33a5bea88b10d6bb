"""The root conftest's XLA settings: added where missing, never over the caller's."""

import importlib.util
import os
from pathlib import Path

import jax
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "_root_conftest", Path(__file__).resolve().parent.parent / "conftest.py"
)
assert _SPEC is not None and _SPEC.loader is not None
_ROOT_CONFTEST = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_ROOT_CONFTEST)


def test_defaults_are_added_and_the_callers_flags_win():
    merge = _ROOT_CONFTEST._with_default_flags
    assert merge("") == (
        "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
        "--xla_cpu_use_fusion_emitters=false"
    )
    assert merge("--xla_backend_optimization_level=2 --xla_dump_to=/tmp/x") == (
        "--xla_backend_optimization_level=2 --xla_dump_to=/tmp/x "
        "--xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"
    )
    assert merge("--xla_force_host_platform_device_count=2 --xla_cpu_use_fusion_emitters=true") == (
        "--xla_force_host_platform_device_count=2 --xla_cpu_use_fusion_emitters=true "
        "--xla_backend_optimization_level=0"
    )
    assert merge("", fast_compile=False) == "--xla_force_host_platform_device_count=8"


def test_compiler_choice():
    choose = _ROOT_CONFTEST._fast_compile
    assert choose({}) is True
    assert choose({"HADAMARD_JAX_TEST_COMPILER": "fast"}) is True
    assert choose({"HADAMARD_JAX_TEST_COMPILER": "default"}) is False
    with pytest.raises(ValueError, match="HADAMARD_JAX_TEST_COMPILER.*'xla'"):
        choose({"HADAMARD_JAX_TEST_COMPILER": "xla"})


def test_this_process_has_the_devices_the_sharding_tests_run_on():
    # Eight CPU devices unless the caller chose a count: then the sharding scripts run in a
    # fresh Python (tests/utils.run_on_8_cpu_devices), slower but the same checks.
    if "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""):
        assert jax.device_count() == 8
