"""The SuperNI benchmark of SAPT (Zhao et al. 2024, github.com/circle-hit/SAPT): 15 Super-NaturalInstructions
tasks, read from the user's copy of SAPT's ``CL_Benchmark`` folder.

Layout (``benchmark.root`` is that ``CL_Benchmark`` folder)::

    <root>/SuperNI/<task>/{train,test}.json     Natural-Instructions task files: Definition, Instances

The prompt is ``cl_dataset.py``'s ``load_SuperNI_dataset`` (zero-shot):
``Definition: <Definition>\\n\\nNow complete the following example -\\nInput: <input>\\nOutput: ``. The orders are
``gen_script_superni_*.py``'s Order 1 and Order 2. Every task is scored by ROUGE-L (``ni-rougeL``), as SAPT's
``score.py`` reads it, against every accepted output (SAPT draws one of them at random). docs/benchmarks/superni.md
says more.
"""

from __future__ import annotations

from pydantic import PositiveInt

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.ni_format import SPLIT_FILES, prompt_example, read_ni_task, split_file, task_folder
from lcia.data.schema import Example
from lcia.errors import input_error

_ORDER_1 = (
    "task1572_samsum_summary",
    "task363_sst2_polarity_classification",
    "task1290_xsum_summarization",
    "task181_outcome_extraction",
    "task002_quoref_answer_generation",
    "task1510_evalution_relation_extraction",
    "task639_multi_woz_user_utterance_generation",
    "task1729_personachat_generate_next",
    "task073_commonsenseqa_answer_generation",
    "task1590_diplomacy_text_generation",
    "task748_glucose_reverse_cause_event_detection",
    "task511_reddit_tifu_long_text_summarization",
    "task591_sciq_answer_generation",
    "task1687_sentiment140_classification",
    "task875_emotion_classification",
)
_ORDER_2 = (
    "task748_glucose_reverse_cause_event_detection",
    "task073_commonsenseqa_answer_generation",
    "task1590_diplomacy_text_generation",
    "task639_multi_woz_user_utterance_generation",
    "task1572_samsum_summary",
    "task1687_sentiment140_classification",
    "task591_sciq_answer_generation",
    "task363_sst2_polarity_classification",
    "task1510_evalution_relation_extraction",
    "task1729_personachat_generate_next",
    "task181_outcome_extraction",
    "task511_reddit_tifu_long_text_summarization",
    "task002_quoref_answer_generation",
    "task1290_xsum_summarization",
    "task875_emotion_classification",
)


class SuperNIParams(BenchmarkParams):
    max_new_tokens: PositiveInt = 50  # the scripts' --generation_max_length


@register_benchmark("superni")
class SuperNI(Benchmark):
    tasks = _ORDER_1
    orders = {"order1": _ORDER_1, "order2": _ORDER_2}
    Params = SuperNIParams

    def read_task(self, name: str) -> BenchmarkTask:
        if not (self.root / "SuperNI").is_dir():
            raise input_error("no SuperNI folder here", file=self.root, field="benchmark.root")
        folder = task_folder(self.root, f"SuperNI/{name}", name)
        family = None
        splits = {}
        for split in SPLIT_FILES:
            path = split_file(folder, split)
            task = read_ni_task(path)
            if not task.definition:  # SAPT's loader indexes Definition[0]
                raise input_error("is empty", file=path, field="Definition")
            family = family or task.category
            splits[split] = [
                self._example(task.definition, inst, f"{name}-{split}-{k}") for k, inst in enumerate(task.instances)
            ]
        return BenchmarkTask(name, splits["train"], splits["test"], "ni-rougeL", self.params.max_new_tokens, family)

    @staticmethod
    def _example(definition: str, inst, example_id: str) -> Example:
        instruction = f"Definition: {definition}"
        head = f"{instruction}\n\nNow complete the following example -\nInput: "
        return prompt_example(instruction, head, inst.input, "\nOutput: ", inst.outputs, example_id, "Output:")
