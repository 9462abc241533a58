"""Traces across the services: OpenTelemetry spans, exported over OTLP/HTTP only when ``OTEL_*`` asks.

Off unless the standard variables name an exporter, and then free: no middleware is installed, no
OpenTelemetry module is even imported, and a :meth:`Tracing.span` is one shared do-nothing context
manager. The request path is what the benchmarks guard, so nothing here may cost it when tracing is
off. On, each request is a server span named by its route template, every span carries no secret
(attributes are chosen here and at the call sites, never copied from headers, bodies or Redis
arguments), and the W3C ``traceparent`` carries the trace to the next service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.core.errors import ApiError, InvalidToken
from shared.core.logs import trace_id
from shared.core.settings import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

#: What a span may hold: plain values a span exporter takes as they are.
AttributeValue: TypeAlias = str | int | float | bool
Attributes: TypeAlias = Mapping[str, AttributeValue]
SpanKind: TypeAlias = Literal["internal", "client"]

#: Where a handler names its route when the router's template says too little (the gateway's
#: catch-all); the server span prefers it to the matched route's path.
ROUTE_KEY = "tracing.route"

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
_TRACES_PATH = "/v1/traces"
_PROTOCOL = "http/protobuf"
# Only these two names are read from or written to a request: the W3C trace context.
_PROPAGATED = (b"traceparent", b"tracestate")


class SpanHandle(Protocol):
    """The part of a span a call site may use: adding an attribute once the outcome is known."""

    def set_attribute(self, key: str, value: AttributeValue) -> object: ...


class _HasStatus(Protocol):
    @property
    def status_code(self) -> int: ...


_Answer = TypeVar("_Answer", bound=_HasStatus)


class _NoSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None


class _NoSpanContext:
    # One shared instance: a span when tracing is off costs a method call and a `with`.
    def __enter__(self) -> SpanHandle:
        return _NO_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SPAN = _NoSpan()
_OFF = _NoSpanContext()


@dataclass(frozen=True)
class TracingSettings:
    """Where spans go: an OTLP/HTTP traces URL, or ``None`` when tracing is off.

    Read from the standard variables (the OpenTelemetry specification's names), with one
    deliberate difference: the SDK's default exporter is OTLP to localhost, while here nothing is
    exported unless ``OTEL_TRACES_EXPORTER=otlp`` or an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` says so.
    The exporter's other variables (headers, timeout, compression, TLS files), the sampler
    (``OTEL_TRACES_SAMPLER``), the batch processor (``OTEL_BSP_*``) and the resource
    (``OTEL_RESOURCE_ATTRIBUTES``) are read by the SDK itself.
    """

    endpoint: str | None = None
    service_name: str | None = None

    @property
    def enabled(self) -> bool:
        """True when spans are exported."""
        return self.endpoint is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings:
        """Build from ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER``, ``OTEL_SERVICE_NAME`` and
        ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` and ``_PROTOCOL``; a value this project cannot honour
        is a :class:`SettingsError` naming its variable, rather than traces silently lost."""
        service_name = environ.get("OTEL_SERVICE_NAME", "").strip() or None
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=service_name)
        exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter not in ("", "otlp", "none"):
            raise SettingsError(f"OTEL_TRACES_EXPORTER must be otlp or none, got {exporter!r}")
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if exporter == "none" or (exporter == "" and not (traces_endpoint or endpoint)):
            return cls(service_name=service_name)
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(name, "").strip()
            if protocol and protocol != _PROTOCOL:
                raise SettingsError(f"{name} must be {_PROTOCOL} (OTLP over HTTP), got {protocol!r}")
            if protocol:
                break
        # As the specification says: the per-signal URL is used as it is, the general one gets the path.
        url = traces_endpoint or (endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/") + _TRACES_PATH
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"the OTLP endpoint must be an http(s) URL, got {url!r}")
        return cls(endpoint=url, service_name=service_name)


class Tracing:
    """One service's spans: a tracer while :meth:`running` with tracing on, nothing otherwise.

    ``continue_traces`` says whether a request's ``traceparent`` is honoured: yes for services
    that only the gateway and each other call, no for the gateway, the public edge, where a
    client could otherwise choose trace ids and force sampling. ``exporter`` replaces the OTLP
    exporter (tests give an in-memory one, which turns tracing on).
    """

    def __init__(
        self,
        settings: TracingSettings,
        service: str,
        *,
        continue_traces: bool = True,
        exporter: SpanExporter | None = None,
    ):
        self.settings = settings
        self.service = settings.service_name or service
        self.continue_traces = continue_traces
        self.enabled = settings.enabled or exporter is not None
        self._exporter = exporter
        self._tracer: Tracer | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Export spans until exit, then send what is still queued (off the event loop)."""
        if not self.enabled:
            yield
            return
        provider = self._provider()
        self._tracer = provider.get_tracer("hybrid-auth")
        try:
            yield
        finally:
            self._tracer = None
            await asyncio.to_thread(provider.shutdown)

    def _provider(self) -> TracerProvider:
        # Imported here: a process with tracing off never loads the SDK.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": self.service}))
        if self._exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.settings.endpoint)))
        return provider

    def span(
        self, name: str, attributes: Attributes | None = None, *, kind: SpanKind = "internal"
    ) -> AbstractContextManager[SpanHandle]:
        """A child of the current span for the block, or a shared do-nothing context when off.

        An exception leaving the block marks the span as an error with ``error.type``: the
        reason of an :class:`InvalidToken`, the code of another :class:`ApiError`, else the
        exception's class name. Its message is never recorded: it may quote what it refused.
        """
        if self._tracer is None:
            return _OFF
        return self._span(name, attributes, kind)

    @contextmanager
    def _span(self, name: str, attributes: Attributes | None, kind: SpanKind) -> Iterator[SpanHandle]:
        from opentelemetry.trace import SpanKind as Kind
        from opentelemetry.trace import Status, StatusCode

        assert self._tracer is not None
        with self._tracer.start_as_current_span(
            name,
            kind=Kind.CLIENT if kind == "client" else Kind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(Status(StatusCode.ERROR))
                raise

    async def http_call(self, method: str, upstream: str, call: Awaitable[_Answer]) -> _Answer:
        """Await ``call``, an HTTP request to ``upstream``, inside a client span with its status.

        Headers built while ``call`` runs get this span's ``traceparent`` from :meth:`inject`.
        """
        if self._tracer is None:
            return await call
        attributes = {"http.request.method": method, "peer.service": upstream}
        with self._span(f"{method} {upstream}", attributes, "client") as span:
            answer = await call
            span.set_attribute("http.response.status_code", answer.status_code)
            if answer.status_code >= 500:
                _mark_error(span, str(answer.status_code))
        return answer

    def inject(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Replace any ``traceparent``/``tracestate`` in ``headers`` with the current span's.

        A no-op when off, so a client's own trace context then passes through unchanged.
        """
        if self._tracer is None:
            return
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        headers[:] = [(name, value) for name, value in headers if name.lower() not in _PROPAGATED]
        headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in carrier.items())

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with a server span per HTTP request while running, or ``app`` itself when off."""
        return _ServerSpans(app, self) if self.enabled else app

    def server_span(self, scope: Scope) -> AbstractContextManager[SpanHandle]:
        """The server span of the request ``scope`` describes, current for the block."""
        if self._tracer is None:
            return _OFF
        return self._server_span(scope)

    @contextmanager
    def _server_span(self, scope: Scope) -> Iterator[SpanHandle]:
        from opentelemetry.trace import SpanKind as Kind
        from opentelemetry.trace import Status, StatusCode, format_trace_id
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        assert self._tracer is not None
        parent = None
        if self.continue_traces:
            carrier = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in scope["headers"]
                if name in _PROPAGATED
            }
            if carrier:
                parent = TraceContextTextMapPropagator().extract(carrier)
        method: str = scope["method"]
        with self._tracer.start_as_current_span(
            method,
            context=parent,
            kind=Kind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            token = trace_id.set(format_trace_id(span.get_span_context().trace_id))
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(Status(StatusCode.ERROR))
                raise
            finally:
                trace_id.reset(token)
                route = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    # The template, never the path itself: bounded names, and no ids in them.
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


def name_route(scope: Scope, template: str) -> None:
    """Name the request's route for its server span, where the router's template is too coarse."""
    scope[ROUTE_KEY] = template


class _ServerSpans:
    """ASGI middleware: one server span around each HTTP request, with its status."""

    def __init__(self, app: ASGIApp, tracing: Tracing):
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.tracing.server_span(scope) as span:
            status = 0

            async def send_with_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                await send(message)

            await self.app(scope, receive, send_with_status)
            if status >= 500:
                _mark_error(span, str(status))


def _mark_error(span: SpanHandle, kind: str) -> None:
    from opentelemetry.trace import Span, Status, StatusCode

    span.set_attribute("error.type", kind)
    if isinstance(span, Span):
        span.set_status(Status(StatusCode.ERROR))


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, InvalidToken):
        return exc.reason
    if isinstance(exc, ApiError):
        return exc.code
    return type(exc).__name__
