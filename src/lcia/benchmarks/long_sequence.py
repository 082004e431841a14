"""The Long-Sequence benchmark (15 classification tasks; Razdaibiedina et al. 2023, as O-LoRA, Wang et al. 2023,
and SAPT, Zhao et al. 2024, run it), read from the user's copy of their ``CL_Benchmark`` folder.

``benchmark.root`` is that ``CL_Benchmark`` folder. Variants, one per repository's layout:

* ``o-lora`` (github.com/cmnfriend/O-LoRA): ``<root>/<Category>/<Task>/{train,test}.json``, JSON arrays of
  ``{sentence, label}``, and ``labels.json``; categories SC (yelp, amazon, IMDB, SST-2), TC (agnews, dbpedia,
  yahoo), NLI (MNLI, CB, RTE), QQP, BoolQA, COPA, MultiRC, WiC. The prompt is ``uie_dataset_lora.py``'s with
  the ``Task:``/``Dataset:`` lines of ``uie_collator.py`` that every O-LoRA script switches on
  (``--add_task_name True --add_dataset_name True``) and the instructions of ``configs/instruction_config.json``:
  ``Task:SC\\nDataset:yelp\\n<instruction>Option: <labels> \\n<sentence>\\nAnswer:`` (COPA: no instruction
  and no options).
* ``sapt`` (github.com/circle-hit/SAPT): ``<root>/Long_Sequence/<task>/{train,test}.json`` in the
  Natural-Instructions format; the prompt is ``cl_dataset.py``'s ``load_LongSeq_dataset``:
  ``<Definition>\\n<input>\\nOutput: ``.

Tasks keep SAPT's folder names (mnli, cb, wic, copa, qqp, boolq, rte, imdb, yelp, amazon, sst2, dbpedia,
agnews, multirc, yahoo). Orders are O-LoRA's: order1-3 its 4-task standard benchmark (``scripts/order_*.sh``),
order4-6 the 15-task sequences of its paper (order6 is ``scripts/long.sh``; SAPT's ``gen_script_long_*.py``
calls order4 "Order 3" and order6 "Order 4"). Every task is scored by exact match (``ni-em``), as both report
it. docs/benchmarks/long-sequence.md says more.
"""

from __future__ import annotations

from pydantic import PositiveInt

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.ni_format import (
    SPLIT_FILES,
    prompt_example,
    read_labels,
    read_ni_task,
    read_records,
    split_file,
    task_folder,
)
from lcia.data.json_records import string
from lcia.data.schema import Example
from lcia.errors import input_error

# task: (O-LoRA's category folder, O-LoRA's task folder)
OLORA_FOLDERS = {
    "yelp": ("SC", "yelp"),
    "amazon": ("SC", "amazon"),
    "imdb": ("SC", "IMDB"),
    "sst2": ("SC", "SST-2"),
    "agnews": ("TC", "agnews"),
    "dbpedia": ("TC", "dbpedia"),
    "yahoo": ("TC", "yahoo"),
    "mnli": ("NLI", "MNLI"),
    "cb": ("NLI", "CB"),
    "rte": ("NLI", "RTE"),
    "qqp": ("QQP", "QQP"),
    "boolq": ("BoolQA", "BoolQA"),
    "copa": ("COPA", "COPA"),
    "multirc": ("MultiRC", "MultiRC"),
    "wic": ("WiC", "WiC"),
}

# O-LoRA's configs/instruction_config.json (zero-shot, --instruction_strategy single); COPA has none.
OLORA_INSTRUCTIONS = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.\n",
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option.\n",
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or false? "
    "Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence? "
    "Choose one from the option.\n",
}

_LONG_4 = (
    "mnli",
    "cb",
    "wic",
    "copa",
    "qqp",
    "boolq",
    "rte",
    "imdb",
    "yelp",
    "amazon",
    "sst2",
    "dbpedia",
    "agnews",
    "multirc",
    "yahoo",
)
_LONG_5 = (
    "multirc",
    "boolq",
    "wic",
    "mnli",
    "cb",
    "copa",
    "qqp",
    "rte",
    "imdb",
    "sst2",
    "dbpedia",
    "agnews",
    "yelp",
    "amazon",
    "yahoo",
)
_LONG_6 = (
    "yelp",
    "amazon",
    "mnli",
    "cb",
    "copa",
    "qqp",
    "rte",
    "imdb",
    "sst2",
    "dbpedia",
    "agnews",
    "yahoo",
    "multirc",
    "boolq",
    "wic",
)


class LongSequenceParams(BenchmarkParams):
    max_new_tokens: PositiveInt = 50  # the scripts' --generation_max_length


@register_benchmark("long-sequence")
class LongSequence(Benchmark):
    tasks = _LONG_4
    orders = {
        "order4": _LONG_4,
        "order5": _LONG_5,
        "order6": _LONG_6,
        "order1": ("dbpedia", "amazon", "yahoo", "agnews"),
        "order2": ("dbpedia", "amazon", "agnews", "yahoo"),
        "order3": ("yahoo", "amazon", "agnews", "dbpedia"),
    }
    variants = ("o-lora", "sapt")
    Params = LongSequenceParams

    def read_task(self, name: str) -> BenchmarkTask:
        category = OLORA_FOLDERS[name][0]
        read = self._olora if self.variant == "o-lora" else self._sapt
        train, test = (read(name, split) for split in SPLIT_FILES)
        return BenchmarkTask(name, train, test, "ni-em", self.params.max_new_tokens, family=category)

    def _olora(self, name: str, split: str) -> list[Example]:
        category, folder_name = OLORA_FOLDERS[name]
        folder = task_folder(self.root, f"{category}/{folder_name}", name)
        head = f"Task:{category}\nDataset:{folder_name}\n"
        if category != "COPA":
            head += OLORA_INSTRUCTIONS[category] + "Option: " + ", ".join(read_labels(folder / "labels.json")) + " \n"
        examples = []
        for index, (where, record) in enumerate(read_records(split_file(folder, split))):
            sentence, label = string(record, "sentence", where), string(record, "label", where)
            example_id = f"{name}-{split}-{index}"
            examples.append(prompt_example(head.strip(), head, sentence, "\nAnswer:", (label,), example_id, "Answer:"))
        return examples

    def _sapt(self, name: str, split: str) -> list[Example]:
        if not (self.root / "Long_Sequence").is_dir():
            raise input_error("no Long_Sequence folder here (variant sapt)", file=self.root, field="benchmark.variant")
        task = read_ni_task(split_file(task_folder(self.root, f"Long_Sequence/{name}", name), split))
        head = task.definition + "\n" if task.definition else ""  # COPA's Definition is empty
        instruction = task.definition or name
        return [
            prompt_example(instruction, head, inst.input, "\nOutput: ", inst.outputs, f"{name}-{split}-{k}", "Output:")
            for k, inst in enumerate(task.instances)
        ]
