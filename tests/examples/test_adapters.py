"""A quick run of examples/adapters.py: every method runs, adapters train only their parameters."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "adapters.py"


def test_quick_run(capsys):
    spec = importlib.util.spec_from_file_location("adapters_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick"])
    out = capsys.readouterr().out
    assert "rotated by 90 degrees" in out and "loha" in out and "dora" in out
    assert results["pretrained"]["acc"][0] > 0.8  # chance is 0.1
    params = {m: results[m]["params"] for m in module.METHODS}
    # Matched budgets: LoHa at half the rank has LoRA's count; HiRA the same; DoRA adds m.
    assert params["loha"] == params["lora"] == params["hira"] < params["dora"] < params["full"]
    assert 0 < params["ia3"] < params["lora"]
    # Adapting beats the unadapted model on the rotated digits.
    for method in ("full", "lora", "loha", "dora"):
        assert results[method]["acc"][0] > results["none"]["acc"][0] + 0.2, method
    assert all(results[m]["temp_bytes"] > 0 for m in module.METHODS if m != "none")


def test_guide_code_blocks_run():
    import re

    guide = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides" / "adapters.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) == 5
    for i, block in enumerate(blocks):
        exec(compile(block, f"adapters.md example {i}", "exec"), {})
