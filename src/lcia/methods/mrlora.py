"""``mrlora``: MR-LoRA, one expert LoRA per task and a router LoRA that picks the expert of each instance.

Zhao, Zhu, Wang, Meng & Zhang, *MLLM-CL: Continual Learning for Multimodal Large Language Models* (arXiv
2506.05453, 2025; official code: github.com/bjzhb666/MLLM-CL, scripts ``Train_*_single`` for the experts,
``0_train_router.sh`` and ``model_agents_select_lora*.py`` for the router). Task K trains a fresh adapter
``expert-K`` alone on its own data (parameter isolation: nothing of an earlier expert moves). After each task a
second adapter, ``router``, is trained for ``router_steps`` AdamW steps (cosine schedule, 3% warm-up, as the
official router) on a replay set of ``replay_per_task`` random training examples of every task seen so far,
each rewritten as a routing request: the router prompt lists the experts by letter (A, B, ...) with what each
was trained on, then the instance's own prompt; the target is the letter of the instance's expert. A test
instance is routed by running the model under the router adapter on that request and taking the letter with
the highest log-likelihood (the official code generates greedily and reads the letter: the same choice when the
letter is the router's first token, and never an illegal answer); the chosen expert then answers it.

Parameters (``method.params``):
    replay_per_task    replay examples kept per task for the router (default 20: the official *_train20 sets)
    router_steps       router optimizer steps after each task (default 40; see docs/baselines.md)
    router_batch_size  routing requests per router step (default 8)
    router_lr          router learning rate (default 2.5e-4: the official router / expert ratio, 5e-6 / 2e-5,
                       applied to lcia's default 1e-3)
    router_r           the router's LoRA rank (default: the run's lora.r, as the official router; alpha keeps
                       the run's alpha / r)

Stores one adapter per task, the router adapter and replay_per_task examples per task (routing needs the model,
so ``lcia route`` without one cannot route). A stage costs one adapter's training plus router_steps steps on
routing prompts (a few hundred tokens each). A test instance costs one pass of its routing prompt, whose KV cache
then scores every expert's letter (a few tokens each), rather than one whole request per expert: the prompt lists
every expert, so that would grow with the experts squared (7.4 times slower at 7 experts, benchmarks/
routing_speed.py). A saved stage holds the experts and the router as PEFT adapters and
mrlora.json (the experts, what each holds, the replay set).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from pydantic import Field, PositiveFloat, PositiveInt
from transformers import get_scheduler

from lcia.core.files import read_json
from lcia.data.images import IMAGE_PLACEHOLDER
from lcia.data.prompts import IGNORE_INDEX, prompt_messages
from lcia.data.schema import Example
from lcia.methods.base import Capabilities, Method, MethodParams, Route, TrainContext, register
from lcia.models.forward import answer_forward
from lcia.models.lora import add_lora

ROUTER, ARTIFACT = "router", "mrlora.json"
ROUTE_ROWS = 32  # routing requests per forward pass when a test set is routed
ROUTER_HEAD = (
    "You are a router between {n} expert models. Select the one best suited to the user's request below, from the "
    "request and the models' descriptions. Reply only with its letter ({letters}); do not answer the request.\n"
    "Models:\n{pool}\n\nThe user's request: "
)
ROUTER_TAIL = "\nReply with the letter of the suitable model alone."


def letter(index: int) -> str:
    """The answer naming expert ``index`` (0-based): A, B, ..., Z, then AA, AB, ... past 26 experts."""
    text, index = "", index + 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("A") + rest) + text
    return text


def routing_example(example: Example, holds: list[list[str]], target: int | None = None) -> Example:
    """``example`` as a request to the router: the pool of experts (``holds[i]``: the tasks expert i trained on),
    then the instance's prompt (its image, if any, opens the turn as in the official router); the answer is the
    letter of expert ``target`` (None: empty, for scoring)."""
    pool = "\n".join(f"- {letter(i)}: an expert in {', '.join(tasks)}" for i, tasks in enumerate(holds))
    head = ROUTER_HEAD.format(n=len(holds), letters=", ".join(map(letter, range(len(holds)))), pool=pool)
    turns = prompt_messages(dataclasses.replace(example, image=""))
    question = "\n".join(m["content"] for m in turns).replace(IMAGE_PLACEHOLDER, "").strip()
    output = "" if target is None else letter(target)
    return Example(head + question + ROUTER_TAIL, "", output, id=example.id, image=example.image)


def sequence_log_likelihoods(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its answer tokens, from ``answer_forward``'s logits (``[answer
    tokens, vocab]``, in the order of ``labels[:, 1:] != -100``) and the batch's ``labels``."""
    targets = labels[:, 1:]
    answers = targets != IGNORE_INDEX
    token = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[answers][:, None])[:, 0]
    rows = answers.nonzero()[:, 0].to(token.device)
    return torch.zeros(len(labels), device=token.device).index_add_(0, rows, token)


def shared_prompt_log_likelihoods(model, batch: dict[str, torch.Tensor], group: int) -> torch.Tensor:
    """``sequence_log_likelihoods`` of ``answer_forward`` on ``batch``, whose rows come in runs of ``group`` that share
    one prompt and differ in their answers (an instance's routing requests, one per expert). Each prompt is encoded
    once, with logits at its last position only, and its KV cache copied to its run's rows, which then encode only
    their answers: one prompt pass per instance instead of one per expert. A batch whose runs differ in their
    prompts (or whose rows are not all pictured alike) takes the plain forward."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    images = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}
    starts = (labels != IGNORE_INDEX).int().argmax(1)  # each row's first answer token: its prompt's length
    leads = torch.arange(0, len(ids), group, device=ids.device)
    shared = all(
        bool((starts[lead : lead + group] == starts[lead]).all())
        and bool((ids[lead : lead + group, : starts[lead]] == ids[lead, : starts[lead]]).all())
        for lead in leads.tolist()
    )
    head = model.get_output_embeddings()
    if not shared or head is None or len(ids) % group or any(len(v) != len(ids) for v in images.values()):
        return sequence_log_likelihoods(answer_forward(model, batch).logits, labels)
    # The prompt pass, right-padded: logits only where each prompt's last token predicts the first answer token.
    width, prompt_starts = int(starts.max()), starts[leads]
    prompt_mask = (torch.arange(width, device=ids.device) < prompt_starts[:, None]).long()
    last = (torch.arange(len(leads), device=ids.device), prompt_starts - 1)
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][last][:, None],))
    try:
        inputs = {k: v[leads] for k, v in images.items()}
        out = model(input_ids=ids[leads, :width], attention_mask=prompt_mask, use_cache=True, **inputs)
    finally:
        handle.remove()
    rows = torch.arange(len(ids), device=ids.device)
    scores = torch.log_softmax(out.logits[:, 0].float(), -1).repeat_interleave(group, 0)[rows, ids[rows, starts]]
    # The answers' later tokens, each row on its prompt's cache (positions and mask go on from the prompt).
    lengths = mask.sum(1) - starts  # answer tokens, end-of-turn included
    steps = int(lengths.max()) - 1
    if steps == 0:
        return scores
    offsets = torch.arange(steps, device=ids.device)
    inside = offsets < (lengths - 1)[:, None]
    at = (starts[:, None] + offsets).clamp(max=ids.shape[1] - 1)
    out.cache.batch_repeat_interleave(group)
    out = model(
        input_ids=ids.gather(1, at).masked_fill(~inside, 0),
        attention_mask=torch.cat([prompt_mask.repeat_interleave(group, 0), inside.long()], dim=1),
        position_ids=starts[:, None] + offsets,
        cache=out.cache,
    )
    targets = ids.gather(1, (at + 1).clamp(max=ids.shape[1] - 1))
    token = torch.log_softmax(out.logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    return scores + token.masked_fill(~inside, 0.0).sum(1)


def _as_example(record: dict) -> Example:
    return Example(**{**record, "references": tuple(record["references"]), "messages": tuple(record["messages"])})


@register("mrlora")
class MrLora(Method):
    """MR-LoRA (MLLM-CL): one expert LoRA per task; a router LoRA, trained on a small replay set, picks the expert."""

    # Every rank keeps the same replay set and trains the router on it with the same seed, outside the DDP wrapper
    # (the router is frozen while an expert trains): the ranks' routers stay identical without any all-reduce.
    capabilities = Capabilities(ddp=True, needs_old_data=True)

    class Params(MethodParams):
        replay_per_task: PositiveInt = Field(20, description="replay examples kept per task to train the router")
        router_steps: PositiveInt = Field(40, description="router optimizer steps after each task")
        router_batch_size: PositiveInt = Field(8, description="routing requests per router step")
        router_lr: PositiveFloat = Field(2.5e-4, description="router learning rate (AdamW, cosine, 3% warm-up)")
        router_r: PositiveInt | None = Field(None, description="the router's LoRA rank (default: lora.r)")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.experts: list[str] = []  # one per stage begun, in order
        self.holds: dict[str, list[str]] = {}  # expert -> the tasks it trained on
        self.replay: dict[str, list[Example]] = {}  # task -> its replay examples
        self.router_log: list[dict] = []
        self._model: PeftModel | None = None  # bound: routing runs the model
        self._inputs = None

    def setup(self, model, lora: LoraConfig) -> PeftModel:
        self.lora = lora
        r = self.params.router_r or lora.r
        # The router's own rank at the run's alpha / r; with its own copy of a projector trained whole, as officially.
        router = dataclasses.replace(lora, r=r, lora_alpha=lora.lora_alpha * r / lora.r)
        model = add_lora(model, lora, adapter_name="expert-1")
        model.add_adapter(ROUTER, router)  # made now, frozen: it exists in every checkpoint and DDP wrapper
        return model

    def bind(self, model: PeftModel, inputs) -> None:
        self._model, self._inputs = model, inputs

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = f"expert-{ctx.stage}"
        if name not in model.peft_config:  # expert-1 is made by setup
            model.add_adapter(name, self.lora)
        model.set_adapter(name)  # the only trainable adapter of the stage
        self.experts.append(name)
        self.holds[name] = [task.name for task in ctx.tasks]

    def after_task(self, ctx: TrainContext) -> None:
        generator = torch.Generator().manual_seed(torch.initial_seed())  # the loop's seed for this stage
        for task in ctx.tasks:
            order = torch.randperm(len(task.train), generator=generator)[: self.params.replay_per_task]
            self.replay[task.name] = [task.train[i] for i in order.tolist()]
        if len(self.experts) < 2:  # one expert answers everything: nothing to route yet
            return
        model, requests = ctx.accelerator.unwrap_model(ctx.model), self._requests()
        losses = self._train_router(model, ctx, requests, torch.initial_seed())
        model.set_adapter(self.experts[-1])
        record = {"stage": ctx.stage, "step": ctx.step, "requests": len(requests), "steps": len(losses)}
        record |= {"first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4)}
        self.router_log.append(record)
        ctx.emit("mrlora_router", record)
        ctx.log["router_loss"] = record["final_loss"]

    def _requests(self) -> list[Example]:
        """The replay set as routing requests, each answered by the letter of its task's expert."""
        holds = [self.holds[e] for e in self.experts]
        index = {task: i for i, tasks in enumerate(holds) for task in tasks}
        return [routing_example(ex, holds, index[task]) for task, kept in self.replay.items() for ex in kept]

    def _train_router(self, model: PeftModel, ctx: TrainContext, requests: list[Example], seed: int) -> list[float]:
        """``router_steps`` steps on the routing requests (reshuffled each epoch); only the router trains."""
        model.set_adapter(ROUTER)
        params = [p for p in model.parameters() if p.requires_grad]
        steps, size = self.params.router_steps, self.params.router_batch_size
        optimizer = torch.optim.AdamW(params, lr=self.params.router_lr, weight_decay=0.0)
        warmup = math.ceil(0.03 * steps)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
        device = next(model.parameters()).device
        losses, order, was_training = [], [], model.training
        model.train()
        # Seeded, and the run's random state left as it was: the same router in a resumed run.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                if len(order) < min(size, len(requests)):
                    order += torch.randperm(len(requests), generator=generator).tolist()
                batch, order = order[:size], order[size:]
                with ctx.accelerator.autocast():
                    loss = answer_forward(model, ctx.inputs([requests[i] for i in batch])).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)  # the Hugging Face Trainer's default, as officially
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
        model.train(was_training)
        return losses

    # --- routing ------------------------------------------------------------------------------------
    def _scores(self, examples: list[Example]) -> list[dict[str, float]]:
        """Each expert's log-likelihood as the router's answer to each example: one row per (example, expert), in
        passes of about ROUTE_ROWS rows, each example's prompt encoded once for all its rows."""
        holds = [self.holds[e] for e in self.experts]
        per_pass = max(1, ROUTE_ROWS // len(holds))
        model = self._model
        previous = model.active_adapter
        model.set_adapter(ROUTER, inference_mode=True)
        scores = []
        try:
            for start in range(0, len(examples), per_pass):
                requests = [
                    routing_example(ex, holds, i)
                    for ex in examples[start : start + per_pass]
                    for i in range(len(holds))
                ]
                with torch.no_grad():
                    scores += shared_prompt_log_likelihoods(model, self._inputs(requests), len(holds)).tolist()
        finally:
            model.set_adapter(previous, inference_mode=True)
        rows = [scores[i : i + len(holds)] for i in range(0, len(scores), len(holds))]
        return [dict(zip(self.experts, row)) for row in rows]

    def route_all(self, examples: list[Example]) -> list[str | None]:
        if len(self.experts) < 2 or self._model is None:
            return super().route_all(examples)
        return [max(scores, key=scores.get) for scores in self._scores(examples)]  # the first of equals: the earliest

    def explain_route(self, example: Example) -> Route:
        holds = {e: ", ".join(self.holds[e]) for e in self.experts}
        if len(self.experts) < 2:
            return Route(self.experts[0] if self.experts else None, holds=holds)
        if self._model is None:
            rule = "the router adapter picks the expert: routing needs the model (lcia eval | ask | serve)"
            return Route(None, holds=holds, rule=rule)
        [scores] = self._scores([example])
        rule = "the expert whose letter the router adapter finds most likely"
        return Route(max(scores, key=scores.get), scores, holds, rule)  # the first of equals: the earliest expert

    def task_adapters(self) -> dict[str, str]:
        return {task: expert for expert, tasks in self.holds.items() for task in tasks}

    # --- saving and resuming --------------------------------------------------------------------------
    def _records(self) -> dict[str, list[dict]]:
        return {task: [dataclasses.asdict(ex) for ex in kept] for task, kept in self.replay.items()}

    def summary(self) -> dict[str, Any]:
        return self.params.model_dump() | {"experts": self.holds, "router": self.router_log}

    @classmethod
    def report_lines(cls, run) -> list[str]:
        log = run.results.get("method", {}).get("router", [])
        stages = "; ".join(
            f"stage {r['stage']}: {r['requests']} requests, loss {r['first_loss']} -> {r['final_loss']}" for r in log
        )
        return [f"MR-LoRA router, retrained after each stage on the replay set: {stages or 'never (a single expert)'}."]

    def artifacts(self) -> dict[str, Any]:
        return {ARTIFACT: {"experts": self.experts, "holds": self.holds, "replay": self._records()}}

    def _load(self, data: dict[str, Any]) -> None:
        self.experts, self.holds = list(data["experts"]), {e: list(t) for e, t in data["holds"].items()}
        self.replay = {task: [_as_example(r) for r in kept] for task, kept in data["replay"].items()}

    def load_artifacts(self, folder: Path) -> None:
        self._load(read_json(folder / ARTIFACT))

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        model.set_adapter(self.experts[-1], inference_mode=True)
        return model

    def state_dict(self) -> dict[str, Any]:
        return self.artifacts()[ARTIFACT] | {"router_log": self.router_log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load(state)
        self.router_log = list(state["router_log"])

    def restore_model(self, model: PeftModel) -> None:
        for name in self.experts:
            if name not in model.peft_config:
                model.add_adapter(name, self.lora)
        if self.experts:
            model.set_adapter(self.experts[-1])
