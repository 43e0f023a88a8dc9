"""Filling a handler's parameters from a delivery, by annotation, and matching its filters.

=====================================  ==========================================================
parameter                              filled with
=====================================  ==========================================================
annotated :class:`~mesh.Event`         the event (also an unannotated ``event``, ``e`` or ``ev``)
annotated :class:`~mesh.Context`       the delivery's context
a CloudEvents SDK ``CloudEvent`` class  the event as that SDK object (``Event.to_sdk``)
a pydantic model or any other type     the event's data, validated and converted (a mismatch
                                       dead-letters the event: it cannot succeed on a retry)
unannotated or ``Any``                 the event's data as decoded
=====================================  ==========================================================

The plan is made once per handler at decoration time (:func:`injection_plan`), so a parameter
the mesh cannot fill is reported then, not at the first delivery.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, TypeAdapter

from mesh.event import Event
from mesh.types import Context

__all__ = ["data_adapter", "injection_plan", "matcher"]


def matcher(value: Any) -> Callable[[Any], bool]:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, list | tuple | set | frozenset):
        options = {str(v) for v in value}
        return lambda got: got is not None and str(got) in options
    text = str(value)
    if any(c in text for c in "*?["):
        rx = re.compile(fnmatch.translate(text))
        return lambda got: got is not None and rx.match(str(got)) is not None
    return lambda got: got is not None and (got == text or str(got) == text)



def data_adapter(annotation: Any) -> Callable[[Any], Any]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation

        def to_model(data: Any) -> Any:
            if isinstance(data, model):
                return data
            if isinstance(data, BaseModel):
                data = data.model_dump()
            if isinstance(data, bytes | str):
                return model.model_validate_json(data)
            return model.model_validate(data)

        return to_model
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.validate_python


def _resolve(fn: Callable[..., Any]) -> dict[str, Any]:
    """The handler's annotations, resolved where possible (a name imported inside a function
    cannot be: ``Event`` and ``Context`` are then recognised by name)."""
    try:
        return get_type_hints(fn)
    except Exception:  # an annotation that does not resolve from the module: resolve one by one
        out: dict[str, Any] = {}
        namespace = dict(getattr(fn, "__globals__", {}))
        for name, ann in getattr(fn, "__annotations__", {}).items():
            if isinstance(ann, str):
                ann = ann.strip("'\"")  # a quoted annotation under postponed evaluation
                short = ann.rsplit(".", 1)[-1]
                known = {"Event": Event, "Context": Context}.get(short)
                try:
                    ann = known or eval(ann, namespace)  # annotations are the author's own code
                except Exception:
                    ann = inspect.Parameter.empty  # unresolvable: the data is passed as it is
                if isinstance(ann, str):
                    ann = inspect.Parameter.empty
            out[name] = ann
        return out


def injection_plan(fn: Callable[..., Any]) -> list[tuple[str, str, Callable[[Any], Any] | None]]:
    """(parameter, kind, converter) per parameter: kind is event, context or data; an event
    converter (an SDK CloudEvent parameter) turns the Event into what the parameter takes."""
    hints = _resolve(fn)
    plan: list[tuple[str, str, Callable[[Any], Any] | None]] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = hints.get(name, inspect.Parameter.empty)
        if ann is Event or (ann is inspect.Parameter.empty and name in ("event", "e", "ev")):
            plan.append((name, "event", None))
        elif ann is Context:
            plan.append((name, "context", None))
        elif _is_sdk_class(ann):
            plan.append((name, "event", _sdk_converter(ann)))
        elif ann is inspect.Parameter.empty or ann is Any:
            plan.append((name, "data", None))
        else:
            plan.append((name, "data", data_adapter(ann)))
    return plan


def _is_sdk_class(annotation: Any) -> bool:
    """Whether the annotation is the CloudEvents SDK's ``CloudEvent`` (the SDK imported lazily)."""
    if not isinstance(annotation, type) or not annotation.__module__.startswith("cloudevents"):
        return False
    from mesh.integrations.sdk import is_sdk_class

    return is_sdk_class(annotation)


def _sdk_converter(cls: type[Any]) -> Callable[[Any], Any]:
    from mesh.integrations.sdk import to_sdk

    return lambda event: to_sdk(event, cls)
