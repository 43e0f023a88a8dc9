"""The delivery pipeline: decode -> handler layers -> handler -> ack, retry, dead-letter or park.

================  ==============================================================================
module            what
================  ==============================================================================
``route``         :class:`Route`: the handlers of one (topic, group) behind one subscription,
                  filters, composing the plugins' layers
``injection``     filling a handler's parameters by annotation (typed data, Event, Context)
``settle``        ending every delivery in exactly one of handled, retried, dead-lettered, parked
``stepping``      running batched deliveries' pipelines without a task each, until they need one
================  ==============================================================================
"""

from __future__ import annotations

from mesh.pipeline.injection import data_adapter, injection_plan
from mesh.pipeline.route import HandlerSpec, Route
from mesh.pipeline.settle import FailureMemory, dead_letter, failed, outcome

__all__ = [
    "FailureMemory",
    "HandlerSpec",
    "Route",
    "data_adapter",
    "dead_letter",
    "failed",
    "injection_plan",
    "outcome",
]
