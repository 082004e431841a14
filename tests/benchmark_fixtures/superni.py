"""A miniature copy of SAPT's SuperNI benchmark in its exact layout, built at test time:
``<root>/SuperNI/<task>/{train,dev,test}.json``, Natural-Instructions task files (Contributors, Categories,
Definition, Positive/Negative Examples, Instances of {id, input, output}) for the 15 tasks. As in SAPT's copy,
outputs are lists (some with two accepted answers) except for the three classification tasks, whose outputs are
strings, and whose ``Categories`` is a string."""

from __future__ import annotations

import json
from pathlib import Path

TASKS = {
    "task1572_samsum_summary": "Summarization",
    "task363_sst2_polarity_classification": "Sentiment Analysis",
    "task1290_xsum_summarization": "Summarization",
    "task181_outcome_extraction": "Information Extraction",
    "task002_quoref_answer_generation": "Question Answering",
    "task1510_evalution_relation_extraction": "Information Extraction",
    "task639_multi_woz_user_utterance_generation": "Dialogue Generation",
    "task1729_personachat_generate_next": "Dialogue Generation",
    "task073_commonsenseqa_answer_generation": "Question Answering",
    "task1590_diplomacy_text_generation": "Dialogue Generation",
    "task748_glucose_reverse_cause_event_detection": "Information Extraction",
    "task511_reddit_tifu_long_text_summarization": "Summarization",
    "task591_sciq_answer_generation": "Question Answering",
    "task1687_sentiment140_classification": "Sentiment Analysis",
    "task875_emotion_classification": "Sentiment Analysis",
}
STRING_OUTPUTS = {
    "task363_sst2_polarity_classification",
    "task1687_sentiment140_classification",
    "task875_emotion_classification",
}


def instance(task: str, n: int) -> dict:
    if task in STRING_OUTPUTS:
        return {"id": f"{task}-{n}", "input": f"Sentence: I loved day {n}.", "output": ["POS", "NEG"][n % 2]}
    outputs = [f"Answer {n}."] + ([f"answer number {n}"] if n % 2 else [])  # some accept two answers
    return {
        "id": f"{task}-{n}",
        "input": f"Passage: Item {n} is described here.\nQuestion: What is it?",
        "output": outputs,
    }


def make_superni(root: Path, per_task: int = 3) -> Path:
    """Every task with ``per_task`` instances per split; returns ``root``."""
    for task, category in TASKS.items():
        folder = root / "SuperNI" / task
        folder.mkdir(parents=True)
        for k, split in enumerate(("train", "dev", "test")):
            start = 0 if split == "train" else per_task  # dev.json is test.json in SAPT's copy
            task_file = {
                "Contributors": ["lcia tests"],
                "Categories": category if task in STRING_OUTPUTS else [category],
                "Definition": [f"In this task you answer about the item ({task})."],
                "Positive Examples": [{"input": "Item 0", "output": "Answer 0.", "explanation": "It is."}],
                "Negative Examples": [],
                "Instances": [instance(task, start + i) for i in range(per_task)],
            }
            (folder / f"{split}.json").write_text(json.dumps(task_file, indent=1), encoding="utf-8")
    return root
