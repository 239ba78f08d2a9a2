"""``rapport eval identity FILE``: the real duplicate detection on a FEBRL-layout CSV.

Records whose ``rec_id`` share the ``rec-N`` prefix (``rec-12-org``, ``rec-12-dup-0``) are
one person; every other column is that person's details. Found pairs are the pairs whose
match probability passes the threshold: the merge suggestions the product would make.
"""

import csv
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rapport.customers.dedupe import PersonRecord, find_duplicates

console = Console()


def person_of(rec_id: str) -> str:
    """``rec-12-dup-3`` and ``rec-12-org`` are both person ``rec-12``."""
    head, sep, _ = rec_id.partition("-dup-")
    if sep:
        return head
    return rec_id.removesuffix("-org")


def read_febrl(path: Path) -> list[PersonRecord]:
    """Read a FEBRL CSV (its header has spaces after the commas) into person records."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [
            {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(fh, skipinitialspace=True)
        ]
    return [
        PersonRecord(
            id=row["rec_id"],
            given_name=row.get("given_name", ""),
            surname=row.get("surname", ""),
            street=f"{row.get('street_number', '')} {row.get('address_1', '')}".strip(),
            street2=row.get("address_2", ""),
            locality=row.get("suburb", ""),
            postcode=row.get("postcode", ""),
            region=row.get("state", ""),
            birth_date=row.get("date_of_birth", ""),
            id_number=row.get("soc_sec_id", ""),
        )
        for row in rows
        if row.get("rec_id")
    ]


def pairs_of(groups: Iterable[Iterable[str]]) -> set[tuple[str, str]]:
    """Every unordered pair within each group."""
    return {
        (a, b) if a < b else (b, a)
        for group in groups
        for a, b in itertools.combinations(list(group), 2)
    }


def score(truth: set[tuple[str, str]], found: set[tuple[str, str]]) -> tuple[float, float, float]:
    """Precision, recall and F1 of the found pairs."""
    hits = len(truth & found)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def identity(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="FEBRL-layout CSV")],
    threshold: Annotated[float, typer.Option(help="match probability for a duplicate")] = 0.9,
) -> None:
    """Duplicate detection on FEBRL records: precision, recall and F1 of the pairs found."""
    records = read_febrl(file)
    people: dict[str, list[str]] = defaultdict(list)
    for record in records:
        people[person_of(record.id)].append(record.id)
    truth = pairs_of(people.values())
    started = time.perf_counter()
    result = find_duplicates(records, threshold=threshold)
    seconds = time.perf_counter() - started
    found = {pair.key for pair in result.pairs}
    precision, recall, f1 = score(truth, found)
    figures = {
        "records": len(records),
        "true_pairs": len(truth),
        "found_pairs": len(found),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "seconds": round(seconds, 2),
    }
    table = Table(title=f"Duplicate detection on {file.name} (threshold {threshold})")
    for key in figures:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in figures.values()))
    console.print(table)
    console.print(
        f"{result.model.pairs_compared:,} pairs compared after blocking; "
        f"weights estimated without labels in {result.model.iterations} EM iterations."
    )
    examples = sorted(result.pairs, key=lambda p: p.probability)[:3]
    for pair in examples:
        console.print(f"  {pair.left} ~ {pair.right}: {pair.probability:.3f} ({pair.reason})")
    print(json.dumps(figures))  # noqa: T201 - the machine-readable last line
