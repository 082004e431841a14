import pytest
from pydantic import ValidationError

from lcia.data.tasks import Task
from lcia.methods import METHODS, Method, MethodParams, build_method, register


def _tasks(n):
    return [Task(name=f"t{i}", train=[], test=[]) for i in range(n)]


def test_registry_has_the_core_methods():
    assert {"zero-shot", "seq-lora", "multitask"} <= set(METHODS)
    assert not build_method("zero-shot").capabilities.trains
    assert build_method("multitask").capabilities.needs_old_data


def test_stages():
    tasks = _tasks(3)
    assert build_method("seq-lora").stages(tasks) == [[t] for t in tasks]
    assert build_method("multitask").stages(tasks) == [tasks]


def test_unknown_parameters_are_rejected():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        build_method("seq-lora", {"beta": 0.9})


def test_a_new_method_is_one_small_registered_class():
    @register("test-only-counting")
    class Counting(Method):
        class Params(MethodParams):
            every: int = 1

        def __init__(self, params=None):
            super().__init__(params)
            self.steps = 0

        def after_optimizer_step(self, ctx):
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

    try:
        method = build_method("test-only-counting", {"every": "2"})
        assert isinstance(method, Counting) and method.state_dict() == {"steps": 0} and method.params.every == 2
    finally:
        del METHODS["test-only-counting"]
