"""A miniature TRACE copy in the layout of TRACE's released data (``LLM-CL-Benchmark_5000``), built at test time:
``<root>/<Task>/{train,eval,test}.json``, JSON arrays of ``{"prompt", "answer"}`` whose prompts open with the
task's instruction (``inference/ICL.py``'s TASK_PROMT), as TRACE's do."""

from __future__ import annotations

import json
from pathlib import Path

INSTRUCTIONS = {
    "C-STANCE": "判断以下文本对指定对象的态度，选择一项：A.支持，B.反对，C.中立。输出A，B或者C。\n",
    "FOMC": "What is the monetary policy stance for the following text? A. dovish, B. hawkish, C. neutral. "
    "Choose one from A, B and C.\n",
    "MeetingBank": "Write a summary of the following meeting transcripts.\n",
    "Py150": "Continue writing the code.\n",
    "ScienceQA": "Choose an answer for the following question and give your reasons.\n\n",
    "NumGLUE-cm": "Solve the following math problem.\n",
    "NumGLUE-ds": "Solve the following math problem.\n",
    "20Minuten": "Provide a simplified version of the following paragraph in German.\n\n",
}


def _record(task: str, i: int) -> dict:
    """The i-th record of ``task``: its instance text and answer, shaped like TRACE's."""
    instance, answer = {
        "C-STANCE": (f"文本：我们支持第{i}项新政策。\n对象：新政策\n态度：", "ABC"[i % 3]),
        "FOMC": (f"Text: The Committee expects inflation to fall {i} points.\nAnswer:", "ABC"[i % 3]),
        "MeetingBank": (f"Transcripts: Council member {i} moved to approve the budget. The motion passed.\nSummary:",
                        f"The council approved budget item {i}."),
        "Py150": (f"<s> def f{i} ( x ) : <EOL> y = x + <NUM_LIT:1> <EOL>", f"return y * <NUM_LIT:{i}>"),
        "ScienceQA": (f"Question: Which object is magnetic?\nOptions: (A) nail {i} (B) glass\nAnswer:",
                      "A\nBecause a nail is made of iron."),
        "NumGLUE-cm": (f"Question: How many moles of water form from {i} moles of hydrogen?\nAnswer:", str(i)),
        "NumGLUE-ds": (f"Question: Tom has {i} apples and buys 2 more. How many does he have?\nAnswer:", str(i + 2)),
        "20Minuten": (f"Paragraph: Die Stadt Zürich baut {i} neue Velowege, sagte der Stadtrat am Montag.\nSimplified:",
                      f"Zürich baut {i} neue Velowege."),
    }[task]  # fmt: skip
    return {"prompt": INSTRUCTIONS[task] + instance, "answer": answer}


def make_trace(root: Path, per_task: int = 3) -> Path:
    """Every task with ``per_task`` train, eval and test records; returns ``root``."""
    for task in INSTRUCTIONS:
        folder = root / task
        folder.mkdir(parents=True)
        for k, split in enumerate(("train", "eval", "test")):
            records = [_record(task, k * per_task + i) for i in range(per_task)]
            (folder / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return root
