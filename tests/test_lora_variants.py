"""``lora.variant``: PEFT's DoRA and rsLoRA under every method that declares them, and a clear refusal elsewhere.

Each (method, variant) pair a method declares runs the two-task stream on the tiny model; its saved adapters
carry the variant (DoRA's magnitude vectors, rsLoRA's flag) and a reloaded last stage answers as the run did.
"""

import json
import math

import pytest
from conftest import builtin_methods
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from lcia.config import load_config
from lcia.errors import LciaError
from lcia.methods import METHODS
from lcia.models.loading import load_base_model
from lcia.models.lora import add_lora, lora_config
from lcia.pipeline import stream_run
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import evaluate_saved

PAIRS = [
    (name, variant)
    for name in builtin_methods(trains=True)
    for variant in ("dora", "rslora")
    if variant in METHODS[name].capabilities.lora_variants
]


def test_rslora_scales_by_alpha_over_the_root_of_the_rank_and_dora_adds_a_magnitude(tiny_model_dir):
    for variant, scaling in (("lora", 16 / 4), ("rslora", 16 / math.sqrt(4)), ("dora", 16 / 4)):
        model = add_lora(load_base_model(tiny_model_dir), lora_config(4, 16, 0.0, ["q_proj"], variant=variant))
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        assert layers and all(layer.scaling["default"] == pytest.approx(scaling) for layer in layers)
        magnitudes = [n for n, p in model.named_parameters() if "lora_magnitude_vector" in n and p.requires_grad]
        assert bool(magnitudes) == (variant == "dora")


@pytest.mark.parametrize(("name", "variant"), PAIRS)
def test_the_variant_trains_saves_and_answers_again(name, variant, tiny_config, tmp_path):
    cfg = tiny_config.model_copy(deep=True)
    cfg.method.name, cfg.lora.variant, cfg.output_dir = name, variant, str(tmp_path / "run")
    result = stream_run.run(cfg, progress=False, log=lambda *_: None)
    configs = list((RunDir(result.run_dir).path / "adapters").rglob("adapter_config.json"))
    assert configs
    for path in configs:
        saved = json.loads(path.read_text())
        assert (saved["use_dora"], saved["use_rslora"]) == (variant == "dora", variant == "rslora")
        if variant == "dora":
            assert any("lora_magnitude_vector" in key for key in load_file(path.parent / "adapter_model.safetensors"))
    assert list(evaluate_saved(str(result.run_dir), progress=False).values()) == result.matrix[-1]


def test_a_method_without_the_variant_refuses_it_in_one_line_naming_the_field(tiny_config):
    refusing = [(n, v) for n in builtin_methods(trains=True) for v in ("dora", "rslora") if (n, v) not in PAIRS]
    assert refusing  # moelora's gates weigh each expert's LoRA output: plain LoRA only
    name, variant = refusing[0]
    with pytest.raises(LciaError, match=rf"--set: lora.variant: method '{name}' works with .* only"):
        load_config(None, [f"method.name={name}", f"lora.variant={variant}"])
