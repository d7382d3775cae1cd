"""OpenTelemetry tracing, optional and off by default: the one module that knows it.

On when the environment asks for it the way the OpenTelemetry SDK reads it:
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
`OTEL_TRACES_EXPORTER` names `otlp` or `console`; `OTEL_TRACES_EXPORTER=none`
or `OTEL_SDK_DISABLED=true` keeps it off. Everything else (the exporter's
headers, timeout and compression, the batch processor's sizes, the sampler,
`OTEL_RESOURCE_ATTRIBUTES`) the SDK reads itself. `OTEL_SERVICE_NAME` defaults
to `profile-gateway`. Only OTLP over HTTP (protobuf) is shipped, in the
`tracing` extra.

When tracing is off, or the extra is not installed, nothing of OpenTelemetry is
imported and `span()` hands back one shared do-nothing object: a global check
per call. The rest of the gateway sees only this module's small interface, and
a trace context outside a request is a W3C `traceparent` string
(`current_traceparent()`, `span(..., parent=...)`), so the store and the
dispatcher need not know OpenTelemetry either.

What a span may carry: counts, names of apps, backends and events, ids the
gateway makes (request ids), outcomes and status codes. Never a profile's
values, `external_id` included (it may be an email), nor a body, nor a header.
tests/tracing_guard.py fails a test whose exported spans hold what the log
guard refuses in logs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("gateway.tracing")

SERVICE_NAME = "profile-gateway"
INSTRUMENTATION = "gateway"
Kind = Literal["internal", "server", "client"]
Attr = str | bool | int | float | Sequence[str] | Sequence[int]
Attrs = Mapping[str, Attr | None]
# W3C trace-context, version 00: what `current_traceparent` makes and a stored one must be.
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
# The links one span keeps: the SDK's default limit (OTEL_SPAN_LINK_COUNT_LIMIT)
# drops any beyond it anyway, so a batch of 500 writes links its first 128.
MAX_LINKS = 128

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables ask for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(env)
    if exporters is not None:
        return bool(exporters & {"otlp", "console"})
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def _exporters(env: Mapping[str, str]) -> set[str] | None:
    """OTEL_TRACES_EXPORTER's names (None: not set)."""
    value = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not value:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def enabled() -> bool:
    return _tracer is not None


def setup(env: Mapping[str, str] | None = None) -> bool:
    """Starts exporting spans when the environment asks for it (see the module
    doc); once per process, later calls change nothing. Returns whether
    tracing is on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    env = os.environ if env is None else env
    if not requested(env):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces but the tracing extra is not installed"
            " (pip install 'profile-gateway[tracing]'): no traces are exported"
        )
        return False
    # The SDK reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; only its
    # fallback name ("unknown_service...") is replaced.
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource)
    exporters = _exporters(env) or {"otlp"}
    unknown = sorted(exporters - {"otlp", "console", "none"})
    if unknown:
        log.warning(
            "OTEL_TRACES_EXPORTER names exporters the gateway does not ship: ignored",
            extra={"exporters": unknown},
        )
    if "otlp" in exporters:
        protocol = env.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        if protocol.strip() not in ("", "http/protobuf"):
            log.warning(
                "only OTLP over HTTP is shipped: OTEL_EXPORTER_OTLP_PROTOCOL is read as"
                " http/protobuf",
                extra={"protocol": protocol.strip()},
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "OTEL_* variables ask for OTLP but opentelemetry-exporter-otlp-proto-http"
                " is not installed: no traces are exported over OTLP"
            )
        else:
            # Endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    install(provider)
    log.info(
        "tracing on",
        extra={"service": resource.attributes.get("service.name"), "exporters": sorted(exporters)},
    )
    return True


def install(provider: TracerProvider | None) -> None:
    """Uses `provider` for every span from now on (None: tracing off). For
    set-up and tests; it does not touch OpenTelemetry's global provider."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION)


def flush(timeout_seconds: float = 5.0) -> None:
    """Sends the spans still queued (at shutdown); nothing when off."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def shutdown() -> None:
    """Flushes and stops the exporters; tracing is off afterwards."""
    provider = _provider
    install(None)
    if provider is not None:
        provider.shutdown()


class Handle:
    """What `span()` yields: set attributes and the outcome on the span.
    `NOOP` is the shared one when tracing is off."""

    __slots__ = ("_settled", "_span")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        self._settled = False

    @property
    def recording(self) -> bool:
        return self._span is not None and self._span.is_recording()

    def set(self, key: str, value: Attr | None) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def update(self, attrs: Attrs) -> None:
        if self._span is not None:
            for key, value in attrs.items():
                if value is not None:
                    self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        """Marks the span failed, naming only the kind of error (`error.type`):
        an exception's message may quote the input, so it is never recorded."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_attribute("error.type", error_type)
            self._span.set_status(Status(StatusCode.ERROR))
            self._settled = True

    def answered(self) -> None:
        """The exception about to leave the block is an answer (a 4xx), not a
        failure of this span: it is not marked failed."""
        if self._span is not None:
            self._settled = True


NOOP = Handle(None)


def current() -> Handle:
    """The current span (NOOP when off), to add attributes learnt on the way."""
    if _tracer is None:
        return NOOP
    from opentelemetry import trace

    return Handle(trace.get_current_span())


class _Noop:
    """The context manager `span()` returns when tracing is off: no allocation."""

    __slots__ = ()

    def __enter__(self) -> Handle:
        return NOOP

    def __exit__(self, *exc: object) -> None:
        return None  # an exception goes on


_NOOP_SPAN = _Noop()


def span(
    name: str,
    attrs: Attrs | None = None,
    *,
    kind: Kind = "internal",
    headers: Mapping[str, str] | None = None,
    parent: str | None = None,
    links: Sequence[str] = (),
    root: bool = False,
) -> AbstractContextManager[Handle]:
    """A context manager: a span named `name` while the block runs, the
    current one inside it. Its parent is the trace context in `headers` (an
    inbound request's `traceparent`/`tracestate`), else the stored `parent`
    traceparent, else (unless `root`: a new trace) the current span; `links`
    are traceparents it is linked to. An exception leaving the block marks it
    failed with its type only."""
    if _tracer is None:
        return _NOOP_SPAN
    return _span(_tracer, name, attrs, kind, headers, parent, links, root)


def joined(traceparents: Iterable[str | None]) -> tuple[str | None, list[str]]:
    """How a span made for stored writes (a delivery, a confirmation) joins
    their traces: (parent, links). Links to each distinct traceparent, the
    first MAX_LINKS; the parent is the one when all the writes share it, so
    the span sits in the caller's trace itself. With several, a span cannot
    sit in them all, so it starts a trace of its own (`root`) linked to each."""
    distinct = list(dict.fromkeys(tp for tp in traceparents if tp))
    parent = distinct[0] if len(distinct) == 1 else None
    return parent, distinct[:MAX_LINKS]


@contextmanager
def _span(
    tracer: Tracer,
    name: str,
    attrs: Attrs | None,
    kind: Kind,
    headers: Mapping[str, str] | None,
    parent: str | None,
    links: Sequence[str],
    root: bool = False,
) -> Iterator[Handle]:
    from opentelemetry import trace
    from opentelemetry.context import Context

    context: Context | None = None
    if headers is not None:
        context = extract(headers)
    elif parent is not None:
        context = _context_of(parent)
    if context is None and root:
        context = Context()  # empty: no current span to inherit
    linked = [
        trace.Link(ctx)
        for ctx in (_span_context_of(tp) for tp in links)
        if ctx is not None and ctx.is_valid
    ]
    span_kind = {
        "internal": trace.SpanKind.INTERNAL,
        "server": trace.SpanKind.SERVER,
        "client": trace.SpanKind.CLIENT,
    }[kind]
    clean = {k: v for k, v in (attrs or {}).items() if v is not None}
    # No exception events or status messages: their text may quote the input.
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=span_kind,
        attributes=clean,
        links=linked,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        handle = Handle(current)
        try:
            yield handle
        except BaseException as exc:
            if not handle._settled:
                handle.fail(type(exc).__name__)
            raise


def extract(headers: Mapping[str, str]) -> Context | None:
    """The trace context of W3C `traceparent`/`tracestate` headers (None when off)."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {key: headers[key] for key in ("traceparent", "tracestate") if key in headers}
    return TraceContextTextMapPropagator().extract(carrier)


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's `traceparent` (and `tracestate`) to outgoing
    `headers`; nothing when off or outside a span."""
    if _tracer is None:
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(headers)


def current_traceparent() -> str | None:
    """The current span's W3C `traceparent`, to store with a write so a later
    delivery joins its trace; None when off or outside any span."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def _context_of(traceparent: str) -> Context | None:
    if not TRACEPARENT.fullmatch(traceparent):
        return None
    return extract({"traceparent": traceparent})


def _span_context_of(traceparent: str) -> Any:
    from opentelemetry import trace

    context = _context_of(traceparent)
    return None if context is None else trace.get_current_span(context).get_span_context()
