"""MLLM-DCL, the domain continual learning half of MLLM-CL (Zhao et al. 2025, "MLLM-CL: Continual Learning for
Multimodal Large Language Models"; github.com/bjzhb666/MLLM-CL; also in MCITlib, github.com/Ghy0501/MCITlib),
read from the user's copy as MLLM-CL's ``scripts/LLaVA/Train_dom`` and ``Eval_dom`` scripts read it.

Layout (the Hugging Face release Impression2805/MLLM-CL; MCITlib's ``Domain_data/``)::

    <root>/{RS, Med, AD, Sci, Fin}/train.json    LLaVA conversations
    <root>/{RS, Med, AD, Sci, Fin}/test.json     [{question_id, image, text, answer}]
    <root>/{RS, Med, AD, Sci, Fin}/images/...    every file's ``image`` is relative to its domain folder

The order is MLLM-CL's (RS, Med, AD, Sci, Fin: Train_dom/1_RemoteSensing.sh .. 5_Financial.sh). Each domain
is prompted by the ``model_*.py`` its eval script runs and scored by a port of its ``eval_*.py``
(:mod:`lcia.scorers.mllm_dcl`); docs/benchmarks/mllm-dcl.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import Field, PositiveInt

from lcia.benchmarks.base import Benchmark, BenchmarkParams, BenchmarkTask, register_benchmark
from lcia.benchmarks.llava_files import read_conversations, read_questions
from lcia.data.schema import Example
from lcia.errors import input_error

TASKS = ("RS", "Med", "AD", "Sci", "Fin")

# model_fin.py's suffix, chosen by the record's answer; model_pvqa.py's (MCITlib's eval_med.sh runs it).
FIN_YES_NO = " Only answer with yes or no directly."
FIN_CHOICE = " Answer with the given letter directly, e.g., A, B, C, D."
MED_SUFFIX = " Answer the question with a single word (or phrase)."


@dataclass(frozen=True)
class TaskSpec:
    scorer: str
    model_script: str  # the model_*.py that answers the domain's test set (its prompt)
    epochs: int  # Train_dom/<k>_<Domain>.sh's --num_train_epochs (``training.epochs: benchmark``)


SPECS = {
    "RS": TaskSpec("mllm-dcl-ai2d", "model_ai2d.py", 1),  # 1_eval_remotesensing.sh
    "Med": TaskSpec("mllm-dcl-pvqa", "model_ai2d.py", 3),  # 2_eval_medical.sh (model_pvqa.py for zero-shot LLaVA)
    "AD": TaskSpec("mllm-dcl-ai2d", "model_ai2d.py", 1),  # 3_eval_drivelm.sh
    "Sci": TaskSpec("mllm-dcl-sci", "model_ai2d.py", 2),  # 4_eval_sci.sh
    "Fin": TaskSpec("mllm-dcl-finvis", "model_fin.py", 1),  # 5_eval_financial.sh
}


class MLLMDCLParams(BenchmarkParams):
    med_answer_suffix: bool = Field(
        False,
        description="append model_pvqa.py's ' Answer the question with a single word (or phrase).' to Med's test "
        "questions, as MCITlib's eval_med.sh does (MLLM-CL's own Eval_dom script does so only for zero-shot LLaVA)",
    )
    max_new_tokens: PositiveInt = Field(
        128, description="answer length cap of every domain (the model_*.py scripts' --max_new_tokens default)"
    )


@register_benchmark("mllm-dcl")
class MLLMDCL(Benchmark):
    tasks = TASKS
    orders = {"default": TASKS}
    Params = MLLMDCLParams

    def read_task(self, name: str) -> BenchmarkTask:
        folder = self.root / name
        if not folder.is_dir():
            raise input_error(f"missing domain folder {name}/", file=folder)
        train = read_conversations(_file(folder, "train.json"), folder)
        test = [self._prompted(name, ex) for ex in read_questions(_file(folder, "test.json"), folder)]
        spec = SPECS[name]
        return BenchmarkTask(name, train, test, spec.scorer, self.params.max_new_tokens, epochs=spec.epochs)

    def _prompted(self, name: str, example: Example) -> Example:
        """The test question as the domain's model_*.py asks it."""
        if name == "Fin":
            suffix = FIN_YES_NO if example.output in ("Yes", "No") else FIN_CHOICE
        elif name == "Med" and self.params.med_answer_suffix:
            suffix = MED_SUFFIX
        else:
            return example
        return replace(example, instruction=example.instruction + suffix)


def _file(folder: Path, name: str) -> Path:
    if not (folder / name).is_file():
        raise input_error(f"no {name} in the domain folder", file=folder / name)
    return folder / name
