"""TRACE (Wang et al. 2023, "TRACE: A Comprehensive Benchmark for Continual Learning in Large Language Models";
github.com/BeyonderXX/TRACE), read from the user's copy of its released data as TRACE's own loader reads it.

Layout (``benchmark.root`` is the folder TRACE's scripts pass as ``--data_path``, e.g. ``LLM-CL-Benchmark_5000``)::

    <root>/<Task>/train.json    JSON arrays of {"prompt", "answer"} (utils/data/raw_datasets.py,
    <root>/<Task>/test.json     LocalJsonFileDataset); eval.json, a third split, is not used here

for C-STANCE, FOMC, MeetingBank, Py150, ScienceQA, NumGLUE-cm, NumGLUE-ds and 20Minuten, trained in that order
(``scripts/train_*.sh``). The model sees each ``prompt`` verbatim (TRACE's prompts already hold the task's
instruction) as one user turn; ``Example.instruction`` is the task's instruction as ``inference/ICL.py``'s
``TASK_PROMT`` gives it, which prompts open with, for grouping. Each task is scored as
``inference/infer_single.py`` scores it (``lcia.scorers.trace``); 20Minuten's SARI takes the prompt as its
source. docs/benchmarks/trace.md says more.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import PositiveInt

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.data.json_records import Where, json_type, load, string
from lcia.data.schema import Example
from lcia.errors import input_error

TASKS = ("C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten")

SCORERS = {  # the eval_*.py infer_single.py calls for each task, and the number the paper reports
    "C-STANCE": "trace-accuracy",
    "FOMC": "trace-accuracy",
    "MeetingBank": "trace-rougeL",
    "Py150": "trace-py150",
    "ScienceQA": "trace-scienceqa",
    "NumGLUE-cm": "trace-accuracy",
    "NumGLUE-ds": "trace-accuracy",
    "20Minuten": "trace-sari",
}

# The epochs scripts/train_lora.sh trains each task for (``training.epochs: benchmark``)
EPOCHS = dict(zip(TASKS, (5, 3, 7, 5, 3, 5, 5, 7)))

INSTRUCTIONS = {  # inference/ICL.py's TASK_PROMT
    "FOMC": "What is the monetary policy stance for the following text? A. dovish, B. hawkish, C. neutral. "
    "Choose one from A, B and C.\n",
    "C-STANCE": "判断以下文本对指定对象的态度，选择一项：A.支持，B.反对，C.中立。输出A，B或者C。\n",
    "ScienceQA": "Choose an answer for the following question and give your reasons.\n\n",
    "NumGLUE-cm": "Solve the following math problem.\n",
    "NumGLUE-ds": "Solve the following math problem.\n",
    "MeetingBank": "Write a summary of the following meeting transcripts.\n",
    "Py150": "Continue writing the code.\n",
    "20Minuten": "Provide a simplified version of the following paragraph in German.\n\n",
}


class TraceParams(BenchmarkParams):
    max_new_tokens: PositiveInt = 512  # the scripts' --max_ans_len


@register_benchmark("trace")
class Trace(Benchmark):
    tasks = TASKS
    orders = {"default": TASKS}
    Params = TraceParams

    def read_task(self, name: str) -> BenchmarkTask:
        folder = self.root / name
        if not folder.is_dir():
            raise input_error(f"missing task folder {name}", file=folder)
        train, test = (self._read(folder / f"{split}.json", name, split) for split in ("train", "test"))
        return BenchmarkTask(name, train, test, SCORERS[name], self.params.max_new_tokens, epochs=EPOCHS[name])

    def _read(self, path: Path, task: str, split: str) -> list[Example]:
        if not path.is_file():
            raise input_error(f"missing {split} file", file=path)
        examples = []
        for index, (line, record) in enumerate(load(str(path)).records):
            where = Where(str(path), line, f"[{index}].")
            if not isinstance(record, dict):
                raise where.error(None, f"expected a JSON object with prompt and answer, got {json_type(record)}")
            examples.append(_example(record, where, task, f"{task}-{split}-{index}"))
        return examples


def _example(record: dict, where: Where, task: str, example_id: str) -> Example:
    prompt = string(record, "prompt", where)
    if "answer" not in record:
        raise where.error("answer", "missing required field")
    answer = string(record, "answer", where, default="")  # TRACE reads a null answer as "" and scores it 0
    instruction = INSTRUCTIONS[task]
    rest = prompt[len(instruction) :] if prompt.startswith(instruction) else prompt
    return Example(
        instruction=instruction.strip(),
        input=rest,
        output=answer,
        id=example_id,
        messages=({"role": "user", "content": prompt},),
        meta={"source": prompt},  # 20Minuten's SARI source: TRACE passes the prompts
    )
