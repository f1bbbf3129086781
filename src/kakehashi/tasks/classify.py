"""Image classification: `[nc]` scores to the top-k classes with names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import ModelFacts, TaskKind, numbered_names, register


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as probabilities: kept if they already are (softmax in the graph), else softmax."""
    scores = scores.astype(np.float64)
    if scores.min() >= 0 and abs(scores.sum() - 1.0) < 1e-3:
        return scores
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


@dataclass(frozen=True)
class ClassifyTask:
    """A classifier: its input, output tensor and class names."""

    input: ImageInput
    output: str
    names: tuple[str, ...]
    kind: str = "classify"

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """One image's scores to `[{class, name, confidence}]` for the top `top_k` classes."""
        probs = _probabilities(outputs[self.output].reshape(-1))
        top = np.argsort(-probs, kind="stable")[: params.top_k]
        return [
            {
                "class": int(cls),
                "name": self.names[cls] if cls < len(self.names) else str(cls),
                "confidence": round(float(probs[cls]), params.decimals),
            }
            for cls in top
        ]


def _build(facts: ModelFacts) -> ClassifyTask:
    """A classifier reads its first output; without names, its classes are numbered."""
    output = facts.backend.outputs[0].name
    return ClassifyTask(facts.image_input, output, facts.names or numbered_names(facts.probe()[output].shape[-1]))


register(TaskKind("classify", _build, default_resize="crop"))
