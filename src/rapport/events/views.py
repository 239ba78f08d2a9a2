"""``/api/v1/events/...``: Segment's HTTP tracking API, authenticated by write key."""

import base64
import binascii
import json
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError

from rapport import money
from rapport.auth.deps import CurrentAdmin, CurrentMember, Db
from rapport.customers import service as customers
from rapport.db import Database, JsonObject, transient
from rapport.events import service
from rapport.problems import Invalid, Problem

router = APIRouter(prefix="/api/v1", tags=["events"])
ATTEMPTS = 3


class SourceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SourceCreated(BaseModel):
    id: str
    name: str
    write_key: str


class EventContext(BaseModel):
    """An event's ``context``: its traits are read, the rest is kept as sent."""

    model_config = ConfigDict(extra="allow")

    traits: JsonObject | None = None


class EventIn(BaseModel):
    """One Segment event, in the shapes the service reads; other fields are kept as sent."""

    # Segment's libraries send ids as strings, some as numbers: both are the same id.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    type: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    previousId: str | None = None
    groupId: str | None = None
    messageId: str | None = Field(default=None, max_length=200)
    event: str | None = None
    traits: JsonObject | None = None
    properties: JsonObject | None = Field(
        default=None,
        description="The event's properties. For `Order Completed`, `total` (else "
        "`revenue`) is the amount in major units of `currency` (ISO 4217, USD if none): "
        'best as decimal text ("1234.50", "1500" for JPY, "1.234" for KWD); a JSON '
        "number is read exactly as written. An amount with more decimals than the "
        "currency has (19.999 EUR, 15.5 JPY) refuses the request (422), never rounded; "
        'so does one that is no amount ("abc") or too large, and one other than 0 in a '
        'code ISO 4217 gives no minor unit ("N.A.": XXX, XAU, XDR...).',
    )
    context: EventContext | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[EventIn]
    # Sent once for every event of the batch that has no context of its own.
    context: EventContext | None = None


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: str
    total_minor: int = Field(
        description="The order's total in its currency's minor units, per ISO 4217's "
        "decimals: 1500 JPY is 1500, 59.90 EUR is 5990, 1.234 KWD is 1234."
    )
    currency: str = Field(
        description="ISO 4217 code; USD when none was sent, XXX for what is not a code."
    )
    status: str
    occurred_at: datetime


@router.post("/event-sources", response_model=SourceCreated, status_code=201)
def create_source(body: SourceIn, principal: CurrentAdmin, db: Db) -> SourceCreated:
    """A source of events (a website, an app) and its write key, shown only now."""
    row, key = service.create_source(db, workspace_id=principal.workspace_id, name=body.name)
    return SourceCreated(id=row.id, name=row.name, write_key=key)


@router.get("/customers/{customer_id}/orders", response_model=list[OrderRead])
def customer_orders(customer_id: str, principal: CurrentMember, db: Db) -> list[OrderRead]:
    customer = customers.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    return [OrderRead.model_validate(o) for o in service.orders(db, customer=customer)]


def _write_key(request: Request, body: Any) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Problem(401, "unauthorized", "malformed Basic authorization") from exc
    key = body.get("writeKey") if isinstance(body, dict) else None
    if not key:
        raise Problem(401, "unauthorized", "send the write key as the Basic-auth user name")
    return str(key)


def _events(body: Any, kind: str | None) -> list[dict[str, Any]]:
    """The request's events, as the service reads them; 422 for any other shape."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    try:
        if kind is None:
            parsed = BatchIn.model_validate(body)
            context = parsed.context.model_dump(exclude_unset=True) if parsed.context else {}
            return [{"context": context, **e.model_dump(exclude_unset=True)} for e in parsed.batch]
        return [EventIn.model_validate({**body, "type": kind}).model_dump(exclude_unset=True)]
    except ValidationError as exc:
        raise _invalid(exc) from exc


_NOT_JSON = object()
_AMOUNTS = ("total", "revenue")


def _exact_amounts(raw: bytes, events: list[dict[str, Any]], batch: bool) -> None:
    """Order amounts sent as JSON numbers with a fraction or an exponent, as the text
    they were sent as (``money.Exact``): orjson reads them as doubles, and a double holds
    neither 92233720368547758.07 nor, past about 90 trillion, every cent. Python's json
    reads the body again only when there is such an amount, keeping orjson's speed for
    every other request. Not Python's json alone, once: orjson has no hook to keep a
    number's text, and Python's json accepts what orjson refuses as no JSON (NaN, an
    escaped lone surrogate, which no database column stores) and would answer some
    bodies differently: here orjson alone decides what is JSON."""
    if not any(
        isinstance((e.get("properties") or {}).get(key), float) for e in events for key in _AMOUNTS
    ):
        return
    try:
        again = json.loads(raw, parse_float=money.Exact)
    except (ValueError, RecursionError):  # orjson read it: nesting past json's limit
        return
    sent = again.get("batch") if batch else [again]
    for event, original in zip(events, sent, strict=True):
        properties = event.get("properties") or {}
        for key in _AMOUNTS:
            value = (original.get("properties") or {}).get(key)
            if isinstance(properties.get(key), float) and isinstance(value, money.Exact):
                properties[key] = value


async def _accept(request: Request, kind: str | None) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > service.MAX_BATCH_BYTES:
        raise Problem(413, "too-large", "a request is at most 500 KB")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _NOT_JSON
    key = _write_key(request, body)
    database: Database = request.app.state.database

    def work() -> dict[str, int]:
        with database.session(write=False) as db:
            # Who is sending comes first: a stranger learns nothing of what we accept.
            source = service.source_for_key(db, key)
            # Those the batch is checked with are those it is stored with, whatever an
            # admin defines meanwhile: a chunk stored is never refused after the check.
            defined = service.definitions(db, source=source)
        if body is _NOT_JSON:
            raise Invalid("the body is not JSON")
        # Validated and checked whole before the first write transaction (500 KB of events
        # take a while): not while holding SQLite's one write lock, and one bad event
        # refuses the request before any of it is stored.
        events = _events(body, kind)
        _exact_amounts(raw, events, batch=kind is None)
        service.check(events, defined=defined, batch=kind is None)
        totals = {"stored": 0, "duplicates": 0}
        for first, chunk in service.chunks(events):
            for name, n in store(chunk, first, defined).items():
                totals[name] += n
        return totals

    def store(chunk: list[dict[str, Any]], first: int, defined: service.Defined) -> dict[str, int]:
        # A chunk that met another request making the same customer at the same moment is
        # tried again here: a sender's libraries retry only 5xx and 429, and a retry of the
        # whole batch would store again the events of its chunks that have no messageId.
        attempt = 1
        while True:
            try:
                with database.session() as db:
                    source = service.source_for_key(db, key)  # still valid
                    return service.ingest(
                        db,
                        source=source,
                        events=chunk,
                        defined=defined,
                        batch=kind is None,
                        first=first,
                    )
            except (IntegrityError, OperationalError) as exc:
                if attempt == ATTEMPTS or not (isinstance(exc, IntegrityError) or transient(exc)):
                    raise
                attempt += 1

    return {"success": True, **await run_in_threadpool(work)}


# Pydantic words a wrong shape with its own class names ("a valid dictionary or instance
# of EventIn"); a tracking library's author thinks in JSON.
_SAYS = {"dict_type": "must be a JSON object", "model_type": "must be a JSON object"}


def _invalid(exc: ValidationError) -> Invalid:
    """The first error in the detail, named by its path (``batch[3].properties``), and all
    of them in ``errors`` as for any request that is not valid."""
    errors = [
        {"loc": list(e["loc"]), "msg": _SAYS.get(e["type"], e["msg"]), "type": e["type"]}
        for e in exc.errors()
    ]
    first = exc.errors()[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    return Invalid(f"{path.lstrip('.')}: {errors[0]['msg']}", errors=errors)


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """The request body as OpenAPI shows it: read by ``_accept`` itself, after the key."""
    shape = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": shape}}}}


@router.post("/events/batch", openapi_extra=_documented(BatchIn))
async def batch(request: Request) -> dict[str, Any]:
    """Many events at once, as Segment's ``/v1/batch``."""
    return await _accept(request, None)


def _endpoint(kind: str) -> Any:
    async def endpoint(request: Request) -> dict[str, Any]:
        return await _accept(request, kind)

    endpoint.__doc__ = f"Segment's ``{kind}`` call."
    return endpoint


for _kind in service.TYPES:
    router.add_api_route(
        f"/events/{_kind}",
        _endpoint(_kind),
        methods=["POST"],
        name=f"events_{_kind}",
        openapi_extra=_documented(EventIn),
    )
