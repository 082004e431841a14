import pytest
from conftest import write_jsonl

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
        "- name: science\n  bigbench: natural_instructions/subtask047_misc_answering_science_questions/task.json\n"
        "  short_instruction: true\n  scorer: mc\n"
    )
    (task,) = load_stream(str(tmp_path / "s.yaml"), 10, None, 0)
    assert len(task.instructions) == 1 and task.instructions[0].startswith("Please indicate the correct answer")


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
