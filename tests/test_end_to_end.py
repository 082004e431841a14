"""End to end on the real SmolLM2-135M-Instruct (slow: about two minutes on 2 cores)."""

import pytest

from lcia.config import load_config
from lcia.run_dir import RunDir
from lcia.runner import run


@pytest.mark.slow
def test_smollm2_learns_addition_then_plurals(tmp_path):
    (tmp_path / "stream.yaml").write_text("tasks: [add2, plural]\n")
    cfg = load_config(
        None,
        [
            f"stream={tmp_path / 'stream.yaml'}",
            f"output_dir={tmp_path / 'run'}",
            "training.steps=30",
            "data.test_size=30",
            "evaluation.bootstrap=200",
        ],
    )
    result = run(cfg, progress=False, log=lambda *_: None)
    (before_add, before_plural), (add_after_add, _), (add_after_plural, plural_after_plural) = result.matrix
    # The instruct model answers in prose (scored 0); 30 LoRA steps teach it the task and the answer format.
    assert before_add < 0.1 and before_plural < 0.1
    assert add_after_add >= before_add + 0.3
    assert plural_after_plural >= before_plural + 0.3
    results = RunDir(result.run_dir).read_json("results.json")
    assert results["metrics"]["Avg.ACC"] == pytest.approx((add_after_plural + plural_after_plural) / 2)
    assert results["metrics"]["BWT"] == pytest.approx(add_after_plural - add_after_add)
    low, high = results["intervals"]["Avg.ACC"]
    assert low <= results["metrics"]["Avg.ACC"] <= high
