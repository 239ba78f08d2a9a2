"""Duplicate detection over a whole customer base: 100,000 customers with known duplicates.

Generates people (names drawn with realistic skew, so many share a first name or surname),
then copies some of them the way duplicates arise in a help desk: a typo in a name, a
nickname-length first name, names swapped, a new email address, a phone written another
way or mistyped, a move to a new address, a birth date with day and month swapped, missing
fields. Runs the product's own ``find_duplicates`` on the lot and prints precision, recall
and F1 of the duplicate pairs found (pairs within one cluster), the wall time and the peak
memory of the process; the last line is JSON with ``records``, ``precision``, ``recall``,
``f1``, ``seconds``, ``peak_mb``.

    python bench/identity.py                  # 100,000 records
    python bench/identity.py --records 20000
"""

import argparse
import json
import random
import resource
import string
import time

from rich.console import Console
from rich.table import Table

from rapport.customers.dedupe import PersonRecord, find_duplicates
from rapport.customers.evaluate import pairs_of, score

FIRST = (
    "james mary robert patricia john jennifer michael linda david elizabeth william barbara "
    "richard susan joseph jessica thomas sarah charles karen christopher lisa daniel nancy "
    "matthew betty anthony margaret mark sandra donald ashley steven kimberly paul emily "
    "andrew donna joshua michelle kenneth carol kevin amanda brian dorothy george melissa "
    "timothy deborah ronald stephanie edward rebecca jason sharon jeffrey laura ryan cynthia "
    "jacob kathleen gary amy nicholas angela eric shirley jonathan anna stephen brenda larry "
    "pamela justin emma scott nicole brandon helen benjamin samantha samuel katherine "
    "gregory christine alexander debra frank rachel patrick carolyn raymond janet jack "
    "catherine dennis maria jerry heather tyler diane aaron ruth jose julie adam olivia "
    "nathan joyce henry virginia douglas victoria zachary kelly peter lauren kyle christina "
    "ethan joan walter evelyn noah judith jeremy megan christian andrea keith cheryl roger "
    "hannah terry jacqueline gerald martha harold gloria sean teresa austin ann carl sara "
    "arthur madison lawrence frances dylan kathryn jesse janice jordan jean bryan abigail "
    "billy alice joe julia bruce judy gabriel sophia logan grace albert denise willie amber "
    "alan doris juan marilyn wayne danielle elijah beverly randy isabella roy theresa "
    "vincent diana ralph natalie eugene brittany russell charlotte bobby marie mason kayla "
    "philip alexis louis lori priya wei mohammed fatima aisha carlos lucia yuki hiroshi "
    "olga ivan chen mei ananya rahul sofia mateo amara kwame ngozi ingrid lars"
).split()
SYLLABLES = (
    "an ber ca del fin gar hol in jor kel lan mor nor ost pel quin ros sten tor ul van wes "
    "yar zel bro chi dra ell fro gri hen ist jul kra lin mar nik ola pra ric sal tam ust "
    "vor wil xan yor zan ash bel cor dun eck far gil har ivo"
).split()
STREET_KINDS = ["street", "road", "avenue", "lane", "place", "drive", "court", "crescent"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me"]


def surnames(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))))
    return sorted(names)


def skewed(rng: random.Random, items: list[str], flatten: int) -> str:
    """Zipf-like (weight 1 / (rank + flatten)): the first items far more common than the last.

    With the lists here the commonest first name is about 5 % of people and the commonest
    surname about 0.4 %, close to what censuses report.
    """
    weights = _WEIGHTS.setdefault((len(items), flatten), _cumulative(len(items), flatten))
    return rng.choices(items, cum_weights=weights)[0]


_WEIGHTS: dict[tuple[int, int], list[float]] = {}


def _cumulative(size: int, flatten: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(size):
        total += 1 / (rank + 1 + flatten)
        out.append(total)
    return out


def typo(rng: random.Random, value: str) -> str:
    if len(value) < 2:
        return value
    i = rng.randrange(len(value))
    letter = rng.choice(string.ascii_lowercase)
    match rng.randrange(4):
        case 0:
            return value[:i] + letter + value[i + 1 :]
        case 1:
            return value[:i] + letter + value[i:]
        case 2:
            return value[:i] + value[i + 1 :]
        case _:
            j = min(i + 1, len(value) - 1)
            chars = list(value)
            chars[i], chars[j] = chars[j], chars[i]
            return "".join(chars)


def person(rng: random.Random, family: list[str], towns: list[tuple[str, str]]) -> dict[str, str]:
    given, surname = skewed(rng, FIRST, 5), skewed(rng, family, 50)
    town, postcode = rng.choice(towns)
    born = f"{rng.randint(1940, 2006)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return {
        "given_name": given,
        "surname": surname,
        "email": f"{given}.{surname}{rng.randint(1, 999)}@{rng.choice(DOMAINS)}",
        "phone": f"+1{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}",
        "street": f"{rng.randint(1, 400)} {rng.choice(family)} {rng.choice(STREET_KINDS)}",
        "locality": town,
        "postcode": postcode,
        "birth_date": born,
    }


def duplicate(
    rng: random.Random, original: dict[str, str], towns: list[tuple[str, str]]
) -> dict[str, str]:
    """A second record of the same person, changed the ways real records drift."""
    copy = dict(original)
    changes = rng.randint(1, 3)
    for _ in range(changes):
        match rng.randrange(10):
            case 0:
                copy["given_name"] = typo(rng, copy["given_name"])
            case 1:
                copy["surname"] = typo(rng, copy["surname"])
            case 2:
                copy["given_name"], copy["surname"] = copy["surname"], copy["given_name"]
            case 3:  # a new email address
                copy["email"] = f"{copy['given_name'][:1]}{copy['surname']}@{rng.choice(DOMAINS)}"
            case 4:  # the phone mistyped, or missing
                copy["phone"] = typo(rng, copy["phone"]) if rng.random() < 0.6 else ""
            case 5:  # moved house
                town, postcode = rng.choice(towns)
                copy["street"] = f"{rng.randint(1, 400)} {typo(rng, copy['surname'])} road"
                copy["locality"], copy["postcode"] = town, postcode
            case 6:
                copy["street"] = typo(rng, copy["street"])
            case 7:  # day and month swapped, or a digit mistyped
                born = copy["birth_date"]
                if len(born) == 8 and born.isdigit() and int(born[6:]) <= 12:
                    copy["birth_date"] = born[:4] + born[6:] + born[4:6]
                elif born:
                    copy["birth_date"] = typo(rng, born)
            case 8:
                copy[rng.choice(["email", "street", "birth_date", "locality"])] = ""
            case _:
                copy["given_name"] = copy["given_name"][: max(3, len(copy["given_name"]) - 2)]
    return copy


def generate(records: int, seed: int) -> tuple[list[PersonRecord], list[list[str]]]:
    rng = random.Random(seed)
    family = surnames(rng, 8000)
    towns = [
        (" ".join(surnames(rng, 1)) + rng.choice(["ton", "ville", " hill", ""]), str(2000 + i))
        for i in range(1500)
    ]
    rows: list[PersonRecord] = []
    people: list[list[str]] = []
    while len(rows) < records:
        original = person(rng, family, towns)
        versions = [original]
        if rng.random() < 0.25:
            versions += [
                duplicate(rng, original, towns) for _ in range(rng.choice((1, 1, 1, 2, 3)))
            ]
        ids = []
        for version in versions[: records - len(rows)]:
            ids.append(f"c{len(rows)}")
            rows.append(PersonRecord(id=ids[-1], **version))
        people.append(ids)
    return rows, people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    records, people = generate(args.records, args.seed)
    truth = pairs_of(people)
    started = time.perf_counter()
    result = find_duplicates(records, threshold=args.threshold)
    seconds = time.perf_counter() - started
    precision, recall, f1 = score(truth, {pair.key for pair in result.pairs})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "records": len(records),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_mb, 1),
    }
    table = Table(
        title=f"Duplicate detection: {len(records):,} customers, {len(truth):,} true pairs"
    )
    for key in figures:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in figures.values()))
    Console().print(table)
    print(f"{result.model.pairs_compared:,} pairs compared after blocking")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
