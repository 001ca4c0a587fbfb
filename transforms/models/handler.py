"""A Beam ``ModelHandler`` for any ``AudioModel``, so ``RunInference`` batches and shares it."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from transforms.models.base import AudioModel, ModelSpec
from transforms.records import InferredWindow, Window


class AudioModelHandler(ModelHandler[Window, InferredWindow, AudioModel]):
    """Loads a ``ModelSpec``'s model lazily in the worker and runs it on stacked windows.

    ``RunInference`` loads the model once per worker process and shares it between the
    process's threads (the adapters are thread-safe), batches windows with
    ``BatchElements`` and reports inference metrics.
    """

    def __init__(self, spec: ModelSpec, batch_size: int):
        super().__init__()
        self.spec = spec
        self._batch_size = batch_size

    def load_model(self) -> AudioModel:
        return self.spec.load()

    def run_inference(self, batch: Sequence[Window], model: AudioModel,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[InferredWindow]:
        logits, embeddings = model.infer(np.stack([window.samples for window in batch]))
        return [
            InferredWindow(w.row_id, w.source, w.start_s, w.end_s, logit, embedding)
            for w, logit, embedding in zip(batch, logits, embeddings)]

    def get_num_bytes(self, batch: Sequence[Window]) -> int:
        return sum(window.samples.nbytes for window in batch)

    def get_metrics_namespace(self) -> str:
        return f'RunInference_{self.spec.name}'

    def batch_elements_kwargs(self) -> dict[str, int]:
        # Fixed batches (a bundle's last one may be short): the size is measured per model
        # (ModelSpec.batch_size), and BatchElements' own size search would only add smaller
        # batches and, once its batch sizes stop varying, a numpy RankWarning per batch.
        return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}
