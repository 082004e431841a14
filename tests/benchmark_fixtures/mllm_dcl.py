"""A miniature MLLM-DCL copy in the exact on-disk layout of MLLM-CL's release (its README's "Domain Continual
Learning Data"; MCITlib's ``Domain_data/``), built at test time: the five domains with a few records each and
small generated images under each domain's ``images/``.

    <root>/{RS, Med, AD, Sci, Fin}/{images/, train.json, test.json}

Sci's images are named after their source (``AI2D_*``, ``TQA_*``, ``MapQA_*``), which eval_sci.py reads; Fin's
answers are ``Yes`` / ``No`` or an option letter, which choose model_fin.py's prompt suffix.
"""

from __future__ import annotations

from pathlib import Path

from benchmark_fixtures.common import square_image, write_json

COLORS = [(220, 30, 30), (30, 30, 220), (30, 200, 30)]
SCI_STATES = "Which states have the highest value?"
FIN_CHOICE = "Which bar is tallest?\nA. 2019\nB. 2020"
# domain -> (image name of record i, question of record i, answer of record i)
DOMAINS = {
    "RS": (lambda i: f"P{i:04d}.png", lambda i: "Is there a harbor in the image?", lambda i: ["yes", "no"][i % 2]),
    "Med": (lambda i: f"path_{i}.jpg", lambda i: "What organ is shown?", lambda i: ["liver", "lung", "yes"][i % 3]),
    "AD": (lambda i: f"CAM_FRONT_{i}.jpg", lambda i: "What is the ego car doing?\nA. Going ahead.\nB. Turning left.",
           lambda i: "AB"[i % 2]),
    "Sci": (lambda i: ["AI2D_{}.png", "TQA_{}.png", "MapQA_{}.png"][i % 3].format(i),
            lambda i: ["Which label shows the sun?", "Which is a mammal?", SCI_STATES][i % 3],
            lambda i: ["B", "A", "Texas, Ohio"][i % 3]),
    "Fin": (lambda i: f"chart_{i}.png", lambda i: ["Is revenue rising?", FIN_CHOICE][i % 2],
            lambda i: ["Yes", "B", "No"][i % 3]),
}  # fmt: skip


def make_mllm_dcl(root: Path, per_task: int = 3) -> Path:
    """Write MLLM-DCL under ``root``: ``per_task`` training and test records per domain. Returns ``root``."""
    for domain, (image, question, answer) in DOMAINS.items():
        folder = root / domain
        train, test = [], []
        for i in range(per_task):
            for split, records in (("train", train), ("test", test)):
                path = f"images/{split}/{image(i)}"
                square_image(folder / path, COLORS[i % 3])
                if split == "train":
                    turns = [{"from": "human", "value": f"<image>\n{question(i)}"}, {"from": "gpt", "value": answer(i)}]
                    records.append({"id": f"{domain}-{i}", "image": path, "conversations": turns})
                else:
                    records.append({"question_id": i, "image": path, "text": question(i), "answer": answer(i)})
        write_json(folder / "train.json", train)
        write_json(folder / "test.json", test)
    return root
