"""A miniature Long-Sequence benchmark in both repositories' ``CL_Benchmark`` layouts, built at test time.

    O-LoRA: <root>/<Category>/<Task>/{train,dev,test}.json  ([{"label", "sentence"}]) and labels.json
    SAPT:   <root>/Long_Sequence/<task>/{train,dev,test}.json  (Definition, Instances) and labels.json

with every one of the 15 tasks, their categories, folder names and labels as the repositories ship them."""

from __future__ import annotations

import json
from pathlib import Path

# task: (O-LoRA category, O-LoRA folder, labels, SAPT's Definition[0])
TASKS = {
    "yelp": ("SC", "yelp", ["very negative", "negative", "neutral", "positive", "very positive"],
             "What is the sentiment of the following paragraph? Choose one from the option.\n"),
    "amazon": ("SC", "amazon", ["very negative", "negative", "neutral", "positive", "very positive"],
               "Given a review text from an e-commerce platform, please analyze the sentiment polarity.\n"),
    "imdb": ("SC", "IMDB", ["Good", "Bad"],
             "Classify the sentiment polarity expressed in the following movie reviews.\n"),
    "sst2": ("SC", "SST-2", ["Good", "Bad"], "Make a judgement on the sentiment of the given text.\n"),
    "agnews": ("TC", "agnews", ["World", "Sports", "Business", "Science or Technology"],
               "Please categorize the topics of the news article given below.\n"),
    "dbpedia": ("TC", "dbpedia", ["Company", "Artist", "Athlete", "Village"],
                "I will give you some category entries from Wikipedia, please classify them by topic.\n"),
    "yahoo": ("TC", "yahoo", ["Society & Culture", "Science & Mathematics", "Health"],
              "What is the topic of the following question and answer?\n"),
    "mnli": ("NLI", "MNLI", ["neutral", "entailment", "contradiction"],
             'What is the logical relationship between the "sentence 1" and the "sentence 2"?\n'),
    "cb": ("NLI", "CB", ["entailment", "contradiction", "neutral"],
           "Given a pair of sentences 1 and 2, identify the relationship between them."),
    "rte": ("NLI", "RTE", ["contradiction", "entailment"],
            "Does the following sentence 1 contradict or entailment the sentence 2?"),
    "qqp": ("QQP", "QQP", ["False", "True"],
            'Whether the "first sentence" and the "second sentence" have the same meaning?\n'),
    "boolq": ("BoolQA", "BoolQA", ["True", "False"],
              "According to the following passage, is the question true or false? Choose one from the option.\n"),
    "copa": ("COPA", "COPA", ["A", "B"], None),  # SAPT's COPA has an empty Definition
    "multirc": ("MultiRC", "MultiRC", ["False", "True"],
                "According to the following passage and question, is the candidate answer true or false?\n"),
    "wic": ("WiC", "WiC", ["True", "False"],
            "Given a word and two sentences, whether the word is used with the same sense in both sentence?\n"),
}  # fmt: skip


def sentence(task: str, i: int) -> str:
    if task == "copa":
        return f'Which sentence is the effect of "Event {i}."? Choose one between A and B.\nA: One.\nB: Two.'
    if TASKS[task][0] == "NLI":
        return f"sentence 1: The cat {i} sleeps.\nsentence 2: An animal {i} rests."
    return f"Title: Item {i}\nText: A short text about item {i}."


def records(task: str, split: str, per_task: int) -> list[dict]:
    labels = TASKS[task][2]
    start = {"train": 0, "dev": per_task, "test": per_task}[split]  # dev.json is test.json in both repositories
    return [
        {"label": labels[(start + i) % len(labels)], "sentence": sentence(task, start + i)} for i in range(per_task)
    ]


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def make_olora(root: Path, per_task: int = 3) -> Path:
    """O-LoRA's ``CL_Benchmark``: every task with ``per_task`` records per split; returns ``root``."""
    for task, (category, folder, labels, _) in TASKS.items():
        _write(root / category / folder / "labels.json", labels)
        for split in ("train", "dev", "test"):
            _write(root / category / folder / f"{split}.json", records(task, split, per_task))
    return root


def make_sapt(root: Path, per_task: int = 3) -> Path:
    """SAPT's ``CL_Benchmark/Long_Sequence``: the same records in the Natural-Instructions format."""
    for task, (_, _, labels, definition) in TASKS.items():
        folder = root / "Long_Sequence" / task
        _write(folder / "labels.json", labels)
        for split in ("train", "dev", "test"):
            instances = [{"input": r["sentence"], "output": r["label"]} for r in records(task, split, per_task)]
            task_file = {
                "Definition": [definition] if definition else [],
                "Positive Examples": [],
                "Negative Examples": [],
                "Instances": instances,
            }
            _write(folder / f"{split}.json", task_file)
    return root
