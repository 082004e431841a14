import json
from collections import Counter, defaultdict

import pytest
from conftest import write_jsonl
from PIL import Image

from lcia.data.coin import EASY_VQA, RESERVED_FROM, alignment_examples
from lcia.data.images import easy_vqa_dir, uses_images
from lcia.data.streams import BUILTIN_STREAMS, BUILTIN_TASKS, load_stream, stream_specs
from lcia.errors import LciaError


def test_builtin_streams_load_with_deterministic_splits():
    first = load_stream("ni-cit", test_size=40, train_size=None, split_seed=0)
    again = load_stream("ni-cit", test_size=40, train_size=None, split_seed=0)
    other = load_stream("ni-cit", test_size=40, train_size=None, split_seed=1)
    assert [t.name for t in first] == BUILTIN_STREAMS["ni-cit"]
    for a, b, c in zip(first, again, other):
        assert [e.id for e in a.test] == [e.id for e in b.test]
        assert [e.id for e in a.test] != [e.id for e in c.test]
        assert not {e.id for e in a.test} & {e.id for e in a.train}, "test examples leak into training"
        assert len(a.test) <= 40 and a.train


def test_balanced_tasks_have_a_uniform_majority_baseline():
    tasks = {t.name: t for t in load_stream("ni-cit", test_size=100, train_size=None, split_seed=0)}
    assert tasks["parentheses"].majority_baseline() == 0.5
    assert {e.output for e in tasks["parentheses"].test} == {"Valid", "Invalid"}
    assert tasks["sentiment"].majority_baseline() == 0.25
    for name in ("parentheses", "sentiment"):  # training is balanced too
        labels = [e.output for e in tasks[name].train]
        assert len({labels.count(label) for label in set(labels)}) == 1


def test_families_share_one_instruction_and_inputs_say_what_is_asked():
    tasks = {t.name: t for t in load_stream("ni-cit", 10, None, 0)}
    assert tasks["plural"].instructions == tasks["past-tense"].instructions
    assert tasks["qasc-overlap"].instructions == tasks["qasc-answer"].instructions
    assert tasks["plural"].test[0].input.startswith("This is a ") and tasks["past-tense"].test[0].input.startswith(
        "Today I "
    )
    assert len({t.instructions[0] for t in tasks.values()}) == 6  # 8 tasks, two pairs share


def test_short_instruction_keeps_the_prompt_sentence(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "- name: qasc\n  bigbench: natural_instructions/subtask041_qasc_answer_generation/task.json\n"
        "  short_instruction: true\n"
    )
    (task,) = load_stream(str(tmp_path / "s.yaml"), 10, None, 0)
    assert task.instructions == ["Write a correct answer to the given question based on the associated fact."]


def test_train_size_caps_training_examples():
    tasks = load_stream("ni-cit-small", test_size=10, train_size=25, split_seed=0)
    assert all(len(t.train) == 25 and len(t.test) == 10 for t in tasks)


def test_user_stream_mixes_builtin_and_files(stream_file):
    stream_file.write_text(stream_file.read_text() + "  - add2\n")
    specs, base = stream_specs(str(stream_file))
    assert [s.name for s in specs] == ["colors", "echo", "add2"] and base == stream_file.parent
    tasks = load_stream(str(stream_file), test_size=6, train_size=None, split_seed=0)
    assert tasks[1].instructions == ["Repeat the word."] and tasks[1].test[0].input.startswith("Repeat the word w")


def test_separate_test_file(tmp_path):
    write_jsonl(tmp_path / "tr.jsonl", [{"instruction": "Say hi.", "output": "hi"}] * 5)
    write_jsonl(tmp_path / "te.jsonl", [{"instruction": "Say hi.", "output": "hi", "id": f"t{i}"} for i in range(3)])
    (tmp_path / "s.yaml").write_text("- name: hi\n  train: tr.jsonl\n  test: te.jsonl\n")
    (task,) = load_stream(str(tmp_path / "s.yaml"), 50, None, 0)
    assert len(task.train) == 5 and [e.id for e in task.test] == ["t0", "t1", "t2"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tasks:\n  - add2\n  - add3\n", "s.yaml:3: tasks[1]: unknown task 'add3'"),
        ("tasks:\n  - add2\n  - add2\n", "s.yaml:3: tasks[1]: duplicate task name 'add2'"),
        (
            "tasks:\n  - name: x\n    train: a.jsonl\n    scorer: bleu\n",
            "s.yaml:4: tasks[0].scorer: unknown scorer 'bleu'",
        ),
        (
            "tasks:\n  - name: x\n    train: a.jsonl\n    epochs: 3\n",
            "s.yaml:4: tasks[0].epochs: Extra inputs are not permitted",
        ),
        ("tasks:\n  - name: x\n", "s.yaml:2: tasks[0]: give exactly one of 'train'"),
        ("tasks: []\n", "s.yaml:1: tasks: a stream is a non-empty list of tasks"),
        ("- name: x\n  images: digits\n  train: a.jsonl\n", "s.yaml:1: tasks[0]: give exactly one of 'train'"),
        ("- name: x\n  images: mnist\n", "s.yaml:2: tasks[0].images: unknown image task 'mnist'"),
        ("- name: x\n  images: digits\n  image_folder: imgs\n", "tasks[0]: 'image_folder' needs 'train'"),
        ("- name: x\n  train: a.jsonl\n  scorer: bleu\n", "s.yaml:3: tasks[0].scorer: unknown scorer 'bleu'"),
    ],
)
def test_bad_stream_files(tmp_path, text, expected):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(LciaError) as err:
        stream_specs(str(tmp_path / "s.yaml"))
    assert expected in str(err.value)


def test_bad_data_file_in_a_stream_names_its_line_and_field(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": ""}\n')
    (tmp_path / "s.yaml").write_text("- name: x\n  train: d.jsonl\n")
    with pytest.raises(LciaError, match=r"d\.jsonl:2: output: is empty"):
        load_stream(str(tmp_path / "s.yaml"), 10, None, 0)
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    with pytest.raises(LciaError, match=r"d\.jsonl:2: malformed JSON"):
        load_stream(str(tmp_path / "s.yaml"), 10, None, 0)


def test_builtin_catalogue_is_consistent():
    for stream in BUILTIN_STREAMS.values():
        assert all(name in BUILTIN_TASKS for name in stream)


# --- coin-mini: the multimodal stream ---------------------------------------------------------------


@pytest.fixture(scope="module")
def coin_mini():
    return {t.name: t for t in load_stream("coin-mini", test_size=100, train_size=None, split_seed=0)}


def test_coin_mini_loads_its_five_tasks_with_image_references(coin_mini):
    assert list(coin_mini) == BUILTIN_STREAMS["coin-mini"]
    assert sorted(coin_mini) == ["cifar10", "colour", "digits", "shape", "yes-no"]
    for task in coin_mini.values():
        assert uses_images(task.train) and all(e.image for e in task.train + task.test)
        assert task.scorer == "vqa" and task.max_new_tokens <= 4
        assert not {e.id for e in task.test} & {e.id for e in task.train}
    easy = [coin_mini[name] for name in ("shape", "colour", "yes-no")]
    assert all(t.instructions == [EASY_VQA] and t.family == "easy-vqa" for t in easy)
    assert len({t.instructions[0] for t in coin_mini.values()}) == 3  # easy-vqa, cifar10, digits
    assert {e.output for e in coin_mini["shape"].test} == {"circle", "rectangle", "triangle"}
    assert {e.output for e in coin_mini["yes-no"].test} == {"yes", "no"}
    assert len({e.output for e in coin_mini["colour"].test}) == 8
    assert {e.output for e in coin_mini["digits"].test} == {str(d) for d in range(10)}
    assert len({e.output for e in coin_mini["cifar10"].test}) == 10


def test_coin_mini_test_sets_are_label_balanced(coin_mini):
    for task in coin_mini.values():
        counts = Counter(e.output for e in task.test)
        assert len(set(counts.values())) == 1, task.name
        assert task.majority_baseline() == pytest.approx(1 / len(counts))
        train_counts = Counter(e.output for e in task.train)
        assert len(set(train_counts.values())) == 1 and set(train_counts) == set(counts)


def test_coin_mini_never_uses_the_reserved_easy_vqa_images(coin_mini):
    for name in ("shape", "colour", "yes-no"):
        task = coin_mini[name]
        assert all(e.image.startswith("easy-vqa:train/") for e in task.train)
        assert all(int(e.image.rsplit("/", 1)[1]) < RESERVED_FROM for e in task.train)
        assert all(e.image.startswith("easy-vqa:test/") for e in task.test)  # easy-VQA's own test images
    for task in load_stream("coin-mini", test_size=10_000, train_size=None, split_seed=3):
        train_ids = [
            int(e.image.rsplit("/", 1)[1]) for e in task.train + task.test if e.image.startswith("easy-vqa:train/")
        ]
        assert all(i < RESERVED_FROM for i in train_ids)


def test_coin_mini_splits_are_deterministic_and_seeded():
    first = load_stream("coin-mini", test_size=30, train_size=40, split_seed=0)
    again = load_stream("coin-mini", test_size=30, train_size=40, split_seed=0)
    other = load_stream("coin-mini", test_size=30, train_size=40, split_seed=1)
    for a, b, c in zip(first, again, other):
        assert [e.id for e in a.test] == [e.id for e in b.test] and [e.id for e in a.train] == [e.id for e in b.train]
        assert [e.id for e in a.test] != [e.id for e in c.test]
        assert len(a.train) == 40


def test_alignment_captions_agree_with_the_images_own_questions():
    questions = defaultdict(list)
    with open(easy_vqa_dir() / "train" / "questions.json") as file:
        for question, answer, image_id in json.load(file):
            questions[image_id].append((question, answer))
    examples = alignment_examples(20, seed=0)
    assert len(examples) == 20 and examples == alignment_examples(20, seed=0)
    assert len({e.image for e in examples}) == 20
    for example in examples:
        image_id = int(example.image.removeprefix("easy-vqa:train/"))
        assert image_id >= RESERVED_FROM and example.instruction == "Describe the image briefly."
        colour, shape = example.output.removeprefix("A ").removesuffix(".").split()
        asked = dict(questions[image_id])
        assert asked.get("what color is the shape?", colour) == colour
        assert asked.get("what shape is in the image?", shape) == shape
        assert asked.get(f"what is the {colour} shape?", shape) == shape
        assert asked.get(f"what color is the {shape}?", colour) == colour
        assert asked.get(f"does the image contain a {shape}?", "yes") == "yes"
    # 783 reserved images have a known colour and shape; a longer request goes over them again.
    examples = alignment_examples(1000, seed=0)
    assert len(examples) == 1000 and len({e.image for e in examples[:783]}) == 783
    assert {e.image for e in examples[783:]} < {e.image for e in examples[:783]}


def test_user_llava_task_with_an_image_folder(tmp_path):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pics" / "a.png")
    turns = [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "black"}]
    write_jsonl(tmp_path / "v.jsonl", [{"id": f"r{i}", "image": "a.png", "conversations": turns} for i in range(6)])
    (tmp_path / "s.yaml").write_text("- name: v\n  train: v.jsonl\n  image_folder: pics\n  scorer: vqa\n")
    (task,) = load_stream(str(tmp_path / "s.yaml"), 2, None, 0)
    assert task.instructions == ["Colour?"] and task.test[0].image == str(tmp_path / "pics" / "a.png")
    (tmp_path / "s.yaml").write_text("- name: v\n  train: v.jsonl\n")
    with pytest.raises(LciaError, match=r"v\.jsonl:1: image: record 'r0': image not found: .*/a\.png"):
        load_stream(str(tmp_path / "s.yaml"), 2, None, 0)
