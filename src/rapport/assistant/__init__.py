"""The assistant: triage, classifiers, suggestions, the help center's search by meaning."""


def one_compute_thread() -> None:
    """Run this process's native math on one thread: OpenBLAS for the whole process,
    OpenMP for the calling thread (its limits are per thread; what Rapport runs uses BLAS).

    Their default is a thread per core, which helps a long computation and hurts a server:
    language detection on every inbound message is a small matrix product, and the extra
    threads spin on the other core after each one, against the web server. Measured in
    the ingest writer: triage 78 -> 53 µs of CPU per message. Requests, not threads,
    keep the cores busy here; torch is set apart where it loads (embeddings.py).
    """
    import threadpoolctl

    # Loads numpy, scipy and scikit-learn first: only libraries already loaded are limited.
    from rapport.assistant import classify  # noqa: F401

    threadpoolctl.threadpool_limits(limits=1)
