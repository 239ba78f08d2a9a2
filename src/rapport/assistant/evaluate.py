"""``rapport eval intents`` and ``rapport eval sentiment``: the real classifier on labelled CSVs."""

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rapport.assistant.classify import OOS, TextClassifier

console = Console()


def _read(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(fh) if r.get("text")]
    return [t for t, _ in rows], [c for _, c in rows]


def _run(title: str, train: Path, test: Path) -> None:
    tr_x, tr_y = _read(train)
    te_x, te_y = _read(test)
    started = time.perf_counter()
    model = TextClassifier().fit(tr_x, tr_y)
    train_seconds = time.perf_counter() - started
    preds = [p.label for p in model.predict(te_x)]
    latencies = []
    for text in te_x[:300]:
        t = time.perf_counter()
        model.predict([text])
        latencies.append((time.perf_counter() - t) * 1000)
    accuracy = sum(p == g for p, g in zip(preds, te_y, strict=True)) / len(te_y)
    from sklearn.metrics import f1_score  # imported here: every `rapport` command loads this module

    macro = float(f1_score(te_y, preds, average="macro"))
    ins = [i for i, g in enumerate(te_y) if g != OOS]
    oos = [i for i, g in enumerate(te_y) if g == OOS]
    in_acc = sum(preds[i] == te_y[i] for i in ins) / len(ins) if oos else None
    oos_recall = sum(preds[i] == OOS for i in oos) / len(oos) if oos else None
    q = statistics.quantiles(latencies, n=100)
    figures = {
        "accuracy": round(accuracy, 4),
        "macro_f1": round(macro, 4),
        "in_scope_accuracy": round(in_acc, 4) if in_acc is not None else None,
        "oos_recall": round(oos_recall, 4) if oos_recall is not None else None,
        "train_seconds": round(train_seconds, 2),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
    }
    table = Table(
        title=f"{title}: {train.name} -> {test.name} ({len(tr_x):,} / {len(te_x):,} texts)"
    )
    for key in figures:
        table.add_column(key, justify="right")
    table.add_row(*("-" if v is None else str(v) for v in figures.values()))
    console.print(table)
    console.print(f"model: {model.describe()}")
    print(json.dumps(figures))  # noqa: T201 - the figures line is the point


def intents(
    train: Annotated[
        Path, typer.Option(help="CSV with text,category (category oos = out of scope).")
    ],
    test: Annotated[Path, typer.Option(help="CSV with text,category.")],
) -> None:
    """Train the intent classifier the bot uses and score it."""
    _run("Intents", train, test)


def sentiment(
    train: Annotated[
        Path, typer.Option(help="CSV with text,category (negative/neutral/positive).")
    ],
    test: Annotated[Path, typer.Option(help="CSV with text,category.")],
) -> None:
    """Train the sentiment classifier triage uses and score it."""
    _run("Sentiment", train, test)
