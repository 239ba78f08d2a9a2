"""``rapport eval identity FILE``: the real duplicate detection on a FEBRL-layout CSV.

Records whose ``rec_id`` share the ``rec-N`` prefix (``rec-12-org``, ``rec-12-dup-0``) are
one person; every other column is that person's details. Found pairs are the pairs whose
match probability passes the threshold: the merge suggestions the product would make.
"""

import csv
import dataclasses
import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rapport.customers.dedupe import DuplicatePair, PersonRecord, find_duplicates

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
    return score_counts(len(truth & found), found=len(found), truth=len(truth))


def score_counts(hits: int, *, found: int, truth: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from the pairs found right, found, and to be found."""
    precision = hits / found if found else 1.0
    recall = hits / truth if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# What a sparse record may lack: everything but the name.
_SPARSE_FIELDS = ("street", "street2", "locality", "postcode", "region", "birth_date", "id_number")


def workspaces(
    records: list[PersonRecord], *, people: int, rounds: int, keep: float, seed: int = 7
) -> Iterator[list[PersonRecord]]:
    """Small workspaces drawn from the records: ``people`` persons with all their records,
    each address, date and number field kept with chance ``keep`` (as a business that knows
    a name and an email of most customers and more of a few)."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable draw, not a secret
    by_person: dict[str, list[PersonRecord]] = defaultdict(list)
    for record in records:
        by_person[person_of(record.id)].append(record)
    persons = sorted(by_person)
    for _ in range(rounds):
        chosen = rng.sample(persons, min(people, len(persons)))
        yield [
            dataclasses.replace(r, **{f: "" for f in _SPARSE_FIELDS if rng.random() >= keep})
            for person in chosen
            for r in by_person[person]
        ]


def identity(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="FEBRL-layout CSV")],
    threshold: Annotated[float, typer.Option(help="match probability for a duplicate")] = 0.9,
    people: Annotated[
        int, typer.Option(help="score small workspaces of this many people drawn from FILE")
    ] = 0,
    rounds: Annotated[int, typer.Option(help="how many small workspaces to draw")] = 20,
    keep: Annotated[
        float, typer.Option(help="chance a drawn record keeps each address, date and number")
    ] = 1.0,
) -> None:
    """Duplicate detection on FEBRL records: precision, recall and F1 of the pairs found."""
    records = read_febrl(file)
    samples = (
        list(workspaces(records, people=people, rounds=rounds, keep=keep)) if people else [records]
    )
    pairs: list[DuplicatePair] = []
    hits = found = truth = compared = iterations = 0
    started = time.perf_counter()
    for sample in samples:
        groups: dict[str, list[str]] = defaultdict(list)
        for record in sample:
            groups[person_of(record.id)].append(record.id)
        result = find_duplicates(sample, threshold=threshold)
        true_pairs, found_pairs = pairs_of(groups.values()), {p.key for p in result.pairs}
        hits += len(true_pairs & found_pairs)
        found, truth = found + len(found_pairs), truth + len(true_pairs)
        pairs += result.pairs
        compared += result.model.pairs_compared
        iterations += result.model.iterations
    seconds = time.perf_counter() - started
    precision, recall, f1 = score_counts(hits, found=found, truth=truth)
    figures = {
        "records": sum(len(sample) for sample in samples),
        "true_pairs": truth,
        "found_pairs": found,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "seconds": round(seconds, 2),
    }
    title = f"Duplicate detection on {file.name} (threshold {threshold})"
    if people:
        figures = {"workspaces": len(samples), "people": people, "keep": keep, **figures}
        title = (
            f"Duplicate detection on {len(samples)} workspaces of {people} people drawn "
            f"from {file.name} (threshold {threshold}, fields kept {keep:.0%})"
        )
    table = Table(title=title)
    for key in figures:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in figures.values()))
    console.print(table)
    console.print(
        f"{compared:,} pairs compared after blocking; "
        f"weights estimated without labels in {iterations} EM iterations."
    )
    for pair in sorted(pairs, key=lambda p: p.probability)[:3]:
        console.print(f"  {pair.left} ~ {pair.right}: {pair.probability:.3f} ({pair.reason})")
    print(json.dumps(figures))  # noqa: T201 - the machine-readable last line
