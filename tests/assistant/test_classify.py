"""The classifiers under the assistant: intents with out-of-scope, sentiment, the evals."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from rapport.assistant.classify import OOS, TextClassifier

INTENTS = {
    "card_arrival": [
        "where is my card",
        "my card has not arrived",
        "when will my new card come",
        "card still not delivered",
        "how long until my card arrives",
    ],
    "refund": [
        "i want my money back",
        "how do i get a refund",
        "refund my order please",
        "can i return this for a refund",
        "refund status",
    ],
    "password": [
        "i forgot my password",
        "reset my password",
        "cannot log in password",
        "change my password",
        "password not working",
    ],
    OOS: [
        "what is the capital of peru",
        "tell me a joke about cats",
        "who won the football game",
        "how tall is mount everest",
        "play some jazz music",
    ],
}


def _data() -> tuple[list[str], list[str]]:
    texts = [t for texts in INTENTS.values() for t in texts] * 4
    labels = [label for label, texts in INTENTS.items() for _ in texts] * 4
    return texts, labels


def test_an_intent_is_recognised_from_new_phrasing_with_a_confidence() -> None:
    model = TextClassifier().fit(*_data())
    [p] = model.predict(["my card never arrived"])
    assert p.label == "card_arrival" and not p.out_of_scope and 0 < p.confidence <= 1


def test_something_off_topic_is_out_of_scope() -> None:
    model = TextClassifier().fit(*_data())
    [p] = model.predict(["what is the capital of peru"])
    assert p.out_of_scope and p.label == OOS


def test_a_model_survives_being_stored_and_loaded() -> None:
    model = TextClassifier().fit(*_data())
    again = TextClassifier.loads(model.dumps())
    assert again.predict(["reset my password"])[0].label == "password"


def test_sentiment_of_clear_examples() -> None:
    texts = [
        "i love this, thank you",
        "great service, very happy",
        "awful, terrible experience",
        "worst airline ever, angry",
        "flight at 5pm",
        "what time is boarding",
    ] * 5
    labels = ["positive", "positive", "negative", "negative", "neutral", "neutral"] * 5
    model = TextClassifier().fit(texts, labels, tune_oos=False)
    assert [p.label for p in model.predict(["thank you, love it", "terrible and angry"])] == [
        "positive",
        "negative",
    ]


def test_the_eval_commands_print_their_figures(tmp_path: Path) -> None:
    texts, labels = _data()
    for name in ("train", "test"):
        with (tmp_path / f"{name}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "category"])
            w.writerows(zip(texts, labels, strict=True))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rapport.cli",
            "eval",
            "intents",
            "--train",
            str(tmp_path / "train.csv"),
            "--test",
            str(tmp_path / "test.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(figures) == {
        "accuracy",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "train_seconds",
        "p50_ms",
        "p99_ms",
    }
    assert figures["oos_recall"] is not None
