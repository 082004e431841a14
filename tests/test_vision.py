"""Vision-language models: image tokens, the projector under PEFT, and whole runs on image streams."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import builtin_methods
from PIL import Image
from safetensors import safe_open

from lcia.data.prompts import encode_for_training, encode_prompt
from lcia.data.schema import Example
from lcia.errors import LciaError
from lcia.models.forward import answer_forward, collate
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import add_lora, load_adapters, lora_config
from lcia.models.vision import PROJECTOR, EncoderFeatures, add_image_token, attach_projector, lora_targets

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


@pytest.fixture
def image_stream(tmp_path):
    """Two image tasks in the formats of the field: LLaVA conversations (colour of a square) and TRL's vision
    messages (square or circle), over small PNGs in an image folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    llava, trl = [], []
    for i in range(24):
        color = list(COLORS)[i % 3]
        square = Image.new("RGB", (32, 32), "white")
        square.paste(COLORS[color], (6, 6, 26, 26))
        square.save(folder / f"sq{i}.png")
        llava.append(
            {
                "id": f"c{i}",
                "image": f"sq{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat color is the shape? Answer with one word."},
                    {"from": "gpt", "value": color},
                ],
            }
        )
        shape = ["square", "circle"][i % 2]
        drawn = square if shape == "square" else _circle(COLORS[color])
        drawn.save(folder / f"sh{i}.png")
        trl.append(
            {
                "images": [f"images/sh{i}.png"],
                "messages": [
                    {"role": "system", "content": "Name the shape."},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape is it?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": shape}]},
                ],
            }
        )
    (tmp_path / "colors.json").write_text(json.dumps(llava), encoding="utf-8")
    (tmp_path / "shapes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl), encoding="utf-8")
    (tmp_path / "stream.yaml").write_text(
        "tasks:\n"
        "  - {name: colors, train: colors.json, image_folder: images, scorer: vqa, max_new_tokens: 3}\n"
        "  - {name: shapes, train: shapes.jsonl, scorer: vqa, max_new_tokens: 3}\n",
        encoding="utf-8",
    )
    return tmp_path / "stream.yaml"


def _circle(color) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), fill=color)
    return image


@pytest.fixture
def vision_config(tiny_model_dir, image_stream, tmp_path, monkeypatch):
    from lcia.config import load_config

    monkeypatch.setenv("LCIA_HOME", str(tmp_path / "home"))  # the pre-aligned projector's cache

    def make(*overrides: str):
        return load_config(
            None,
            [
                f"stream={image_stream}",
                f"model.name_or_path={tiny_model_dir}",
                f"output_dir={tmp_path / 'run'}",
                "training.steps=3",
                "training.batch_size=4",
                "data.test_size=6",
                "evaluation.bootstrap=0",
                "lora.r=4",
                "vision.prealign_steps=3",
                "vision.prealign_batch_size=4",
                *overrides,
            ],
        )

    return make


def _packaged(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    slots = add_image_token(tok)
    return tok, slots, attach_projector(load_base_model(tiny_model_dir), slots)


def test_image_tokens_take_the_projected_features(tiny_model_dir):
    tok, slots, model = _packaged(tiny_model_dir)
    example = Example("Answer.", "what color is the shape?", "red", image="easy-vqa:train/0", id="a")
    ids = encode_prompt(tok, example, slots)
    assert ids.count(slots.token_id) == 16
    first = ids.index(slots.token_id)
    input_ids = torch.tensor([ids])
    torch.manual_seed(0)
    a, b = torch.randn(1, 16, 1280), torch.randn(1, 16, 1280)
    with torch.no_grad():
        logits_a = model(input_ids=input_ids, image_features=a).logits
        logits_b = model(input_ids=input_ids, image_features=b).logits
    assert torch.equal(logits_a[:, :first], logits_b[:, :first])  # causal: the text before the image is unchanged
    assert not torch.allclose(logits_a[:, first:], logits_b[:, first:])  # the image tokens carry the features


def test_an_image_example_needs_a_model_that_takes_images(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    with pytest.raises(LciaError, match="has an image, but the model takes no images"):
        encode_prompt(tok, Example("Answer.", "q", "a", image="easy-vqa:train/0", id="x"))


def test_a_cut_that_would_split_the_image_is_an_error(tiny_model_dir):
    tok, slots, _ = _packaged(tiny_model_dir)
    example = Example("Answer. " * 40, "what color is the shape? " * 40, "red", image="easy-vqa:train/0", id="long")
    with pytest.raises(LciaError, match="'long'.*training.max_length.*split its image"):
        encode_for_training(tok, example, 48, slots)


def test_the_projector_trains_beside_lora_and_is_saved_with_the_adapter(tiny_model_dir, tmp_path):
    tok, slots, model = _packaged(tiny_model_dir)
    targets, whole = lora_targets(model, ["q_proj", "v_proj"])
    model = add_lora(model, lora_config(4, 8, 0.0, targets, whole))
    images = EncoderFeatures(slots)
    examples = [Example("Answer.", "what color is the shape?", "red", image=f"easy-vqa:train/{i}") for i in range(4)]
    features = [encode_for_training(tok, ex, 128, slots) for ex in examples]
    batch = collate(features, tok.pad_token_id) | images.forward_inputs([f.image for f in features], "cpu")
    projector = getattr(model.base_model.model, PROJECTOR)
    before = projector.modules_to_save["default"][0].weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    answer_forward(model, batch).loss.backward()
    optimizer.step()
    after = projector.modules_to_save["default"][0].weight
    assert not torch.equal(before, after)
    assert torch.equal(projector.original_module[0].weight, before)  # a new adapter starts from this one
    model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert any(PROJECTOR in key for key in f.keys())
    # Plain PEFT loads it back into a fresh packaged model: the same outputs.
    _, _, fresh = _packaged(tiny_model_dir)
    reloaded = load_adapters(fresh, tmp_path / "adapter")
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        assert torch.allclose(model(**inputs).logits, reloaded.eval()(**inputs).logits, atol=1e-6)


def test_a_run_on_images_writes_the_grid_and_lcia_eval_and_ask_reuse_it(vision_config, image_stream):
    from lcia.pipeline.run_files import RunDir
    from lcia.pipeline.session import evaluate_saved, open_saved
    from lcia.pipeline.stream_run import run

    result = run(vision_config("method.name=dema", "method.params.log_every=1"), progress=False, log=lambda *_: None)
    assert len(result.matrix) == 3 and all(len(row) == 2 for row in result.matrix)
    out = RunDir(result.run_dir)
    vision = out.read_json("manifest.json")["vision"]
    assert vision["model"] == "packaged" and vision["image_tokens"] == 16
    assert vision["prealign"]["steps"] == 3 and "first_loss" in vision["prealign"]
    predictions = out.read_jsonl("predictions.jsonl")
    assert all(p["image"] for p in predictions)
    # The dynamic EMA covers the projector as it does the LoRA tensors.
    coefficients = out.read_jsonl("ema_coefficients.jsonl")
    assert any(PROJECTOR in name for record in coefficients for name in record["coefficient"])
    scores = evaluate_saved(str(result.run_dir), progress=False)
    assert [scores[t] for t in result.tasks] == result.matrix[-1]
    trained = open_saved(str(result.run_dir))[0]
    image = image_stream.parent / "images" / "sq0.png"
    _, answer = trained.ask("What color is the shape? Answer with one word.", image=str(image), max_new_tokens=3)
    last = [p for p in predictions if p["row"] == 2 and p["task"] == "colors" and p["image"] == str(image)]
    if last:  # the same question about the same image: the run's own answer
        assert answer == last[0]["prediction"]


TRAINING_METHODS = builtin_methods(trains=True)


@pytest.mark.parametrize("method", TRAINING_METHODS)
def test_every_training_method_runs_on_images(vision_config, method):
    from lcia.pipeline.stream_run import run

    result = run(vision_config(f"method.name={method}", "training.steps=2"), progress=False, log=lambda *_: None)
    assert all(len(row) == 2 for row in result.matrix)


def test_a_stopped_image_run_resumes_to_the_same_grid(vision_config, stop_and_resume, tmp_path):
    from lcia.pipeline.stream_run import run

    whole = run(
        vision_config("method.name=dema", f"output_dir={tmp_path / 'whole'}"), progress=False, log=lambda *_: None
    )
    resumed = stop_and_resume(vision_config("method.name=dema", "training.checkpoint_every=1"), 4, "stage 2")
    assert resumed.matrix == whole.matrix


@pytest.fixture
def tiny_llava_dir(tmp_path_factory, tiny_model_dir):
    """A randomly initialised LLaVA (CLIP vision tower, 4 image tokens) with its tokenizer and image processor."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    tok = load_tokenizer(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=4,  # (32 / 16) ** 2 patches
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # the patches, not the CLS token
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def test_a_hugging_face_llava_runs_through_its_own_processor(vision_config, tiny_llava_dir):
    from lcia.pipeline.run_files import RunDir
    from lcia.pipeline.session import evaluate_saved
    from lcia.pipeline.stream_run import run

    result = run(vision_config(f"model.name_or_path={tiny_llava_dir}"), progress=False, log=lambda *_: None)
    assert len(result.matrix) == 3
    out = RunDir(result.run_dir)
    assert out.read_json("manifest.json")["vision"] == {"model": "hugging-face", "image_tokens": 4}
    with safe_open(str(out.adapter_dir(2) / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("multi_modal_projector" in k for k in keys)
    lora = [k for k in keys if "lora_" in k]
    assert lora and all("language_model" in k for k in lora)  # the vision tower stays frozen, without LoRA
    scores = evaluate_saved(str(result.run_dir), progress=False)
    assert [scores[t] for t in result.tasks] == result.matrix[-1]


def test_a_hub_id_in_the_local_cache_is_recognised_as_a_vision_language_model(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from lcia.models.vision import is_vision_language

    cache = tmp_path / "hub"
    snapshot = cache / "models--llava-hf--tiny-llava" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {}}))
    (cache / "models--llava-hf--tiny-llava" / "refs").mkdir()
    (cache / "models--llava-hf--tiny-llava" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_vision_language("llava-hf/tiny-llava")  # as after `huggingface-cli download llava-hf/tiny-llava`
    assert not is_vision_language("llava-hf/not-downloaded") and not is_vision_language("smollm2-135m-instruct")
