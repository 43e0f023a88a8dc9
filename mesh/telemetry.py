"""Whether OpenTelemetry tracing is on, asked cheaply on the hot path.

``opentelemetry.trace.get_tracer_provider()`` looks the environment up on every call until a
provider is set; the blocks ask once per event, call and turn. :func:`tracing_on` reads the
environment variable once, then only whether a provider has been set, and remembers a real
one for good (a global tracer provider can be set only once).

>>> isinstance(tracing_on(), bool)
True
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

__all__ = ["NO_SPAN", "span", "tracing_on"]

NO_SPAN: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)
_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ
_on = False


def tracing_on() -> bool:
    """Whether a real (SDK) tracer provider is installed: spans are worth making."""
    global _on
    if _on:
        return True
    if not _FROM_ENV and getattr(trace, "_TRACER_PROVIDER", True) is None:
        return False  # nothing set yet (the API's own global, read without its environment lookup)
    provider = trace.get_tracer_provider()
    _on = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return _on


def span(tracer: trace.Tracer, name: str, **options: Any) -> AbstractContextManager[trace.Span]:
    """A span made current, or a no-op when no tracer provider is installed (the hot path then
    skips context attach/detach; incoming ``traceparent`` still propagates)."""
    if not tracing_on():
        return NO_SPAN
    return tracer.start_as_current_span(name, **options)
