"""Every hook a plugin can implement (pluggy project name ``mesh``).

pluggy calls hooks synchronously, so hooks *decide and return*; the async core acts on what they
return. Collect-all hooks contribute (attributes, layers, components, commands); ``firstresult``
hooks decide (retry or not, where to dead-letter) and the first non-``None`` answer wins.
Built-in plugins are registered first and mark their decisions ``trylast``, so a user's plugin
wins; tracing is ``tryfirst`` so its span wraps retries and dead-lettering.

A plugin is a module or object with functions named after these hooks, decorated with
:data:`hookimpl`::

    from mesh import hookimpl

    @hookimpl
    def mesh_publish_attributes(runtime, topic, event):
        return {"tenant": "acme"}

Hooks that concern one App instance receive its :class:`~mesh.runtime.Runtime` (``runtime``): its
ids, config, broker, ``spawn``/``on_stop`` and ``plugin_state`` — never the App itself. The core
calls them through :class:`mesh.hooks.manager.Hooks`, one typed method per hook. Implementations
return values; pluggy's ``hookwrapper``/``wrapper`` style is refused at registration (return a
layer instead: layers can run code before and after the next one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from mesh.components import Registry
    from mesh.config import MeshConfig
    from mesh.event import Event, ExtensionValue
    from mesh.runtime import Runtime
    from mesh.types import Context, Decision, HandlerLayer, InvokeLayer, PublishLayer, SubscriptionInfo

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "mesh"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mesh_register_components(registry: Registry) -> None:
    """Add components: broker types (``registry.add_broker``), secret stores (``add_secret_store``),
    state stores and bindings (``registry.add(ComponentInfo(kind="state" | "binding", ...))``).

    Return nothing. Called once per App before its config is read, so a plugin's secret store can resolve
    references in that config. Collect-all; return nothing.
    """


@hookspec
def mesh_configure(runtime: Runtime, config: MeshConfig) -> None:
    """Called once per App after its config was validated; read ``config.plugins.config[<name>]``.

    ``runtime.plugin_state`` is where a plugin keeps per-app state (by plugin name).

    Raise :class:`~mesh.errors.ConfigError` for bad settings. Collect-all; return nothing.
    """


@hookspec
def mesh_register_commands(cli: click.Group) -> None:
    """Add commands to the ``mesh`` CLI: ``cli.add_command(...)``. Collect-all; return nothing.

    Called once when the ``mesh`` command starts.
    """


@hookspec
def mesh_app_started(runtime: Runtime) -> None:
    """Called when an App has connected and its consumers run. Collect-all; return nothing.

    May schedule background tasks (``runtime.spawn``); must not block.
    """


@hookspec
def mesh_app_stopping(runtime: Runtime) -> None:
    """Called when an App begins to stop, before its consumers drain. Collect-all; return nothing."""


@hookspec
def mesh_publish_attributes(runtime: Runtime, topic: str, event: Event) -> dict[str, ExtensionValue] | None:
    """Extension attributes to add to an outgoing event. Called on every publish.

    Return a mapping of name to value (names must match ``^[a-z][a-z0-9]{0,19}$``) or ``None``.
    Collect-all: every plugin's attributes are merged, earlier plugins winning on a clash.
    """


@hookspec
def mesh_publish_layers(runtime: Runtime) -> PublishLayer | None:
    """A layer around publishing: ``layer(next) -> publish`` where ``publish(topic, event)`` is async.

    Called once per App at start; return the layer or ``None``. Collect-all: the first plugin's layer is outermost.
    """


@hookspec
def mesh_handler_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer | None:
    """A layer around a subscription's handler: ``layer(next) -> handle`` with ``handle(context)`` async.

    Called once per subscription at start; return the layer or ``None``. A layer may run code before and after ``next``,
    call it again (a retry loop), or raise. Collect-all: the first plugin's layer is outermost
    (tracing is ``tryfirst``, so its span covers the others). Mark a layer that neither waits nor
    needs a task of its own with :func:`mesh.pipeline.stepping.taskless`: batch subscriptions whose
    layers all are run without a task per event.
    """


@hookspec
def mesh_delivery_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer | None:
    """A layer around a whole delivery: the handler *and* its settlement (ack, retry or dead-letter).

    Called once per subscription at start; return the layer or ``None``. The layer's ``next``
    never raises for a handler failure: after it returns, ``context.error`` holds the handler's
    exception (or ``None``) and ``context.outcome`` how the delivery was settled. Use it for what
    must cover dead-lettering too, like a tracing span. Collect-all: the first plugin's layer is
    outermost. Undecodable messages do not pass through it. Mark it with
    :func:`mesh.pipeline.stepping.taskless` as for ``mesh_handler_layers``.
    """


@hookspec(firstresult=True)
def mesh_retry_decision(context: Context, error: BaseException) -> Decision | None:
    """Decide what happens to a delivery whose handler failed: retry later or dead-letter.

    Called after the handler (with its layers) raised.
    Return :class:`~mesh.types.Decision` (``Decision.retry(delay)`` or
    ``Decision.dead_letter(reason)``) or ``None`` to let the next plugin decide. firstresult.
    With no decision at all, the event is dead-lettered.
    """


@hookspec(firstresult=True)
def mesh_dead_letter_target(context: Context, error: BaseException | None) -> str | None:
    """Return the topic a failed (or undecodable) event goes to, or ``None`` to let the next plugin decide.

    Called when a delivery is to be dead-lettered. ``context.event`` is ``None`` for an
    undecodable message. firstresult.
    """


@hookspec(firstresult=True)
def mesh_dead_letter_event(context: Context, error: BaseException | None, target: str) -> Event | None:
    """The event to write to the dead-letter ``target``: the original plus why. firstresult.

    Called once a delivery is to be dead-lettered, after ``mesh_dead_letter_target``. ``error``
    is a :class:`~mesh.errors.DeadLetter` whose ``__cause__`` is the handler's exception (if
    any), or the :class:`~mesh.errors.DecodeError` of an undecodable message. Return the event
    or ``None`` to let the next plugin decide.
    """


@hookspec
def mesh_delivery_outcome(context: Context, outcome: str, error: BaseException | None) -> None:
    """Called once per delivery when the pipeline has settled it. Collect-all; return nothing.

    ``outcome`` is ``"handled"`` (acked after success), ``"skipped"`` (no handler matched; acked),
    ``"retry"`` (nacked for a later attempt), ``"dead_letter"`` (written to the dead-letter
    destination, then acked), ``"returned"`` (given back after a failure to dead-letter) or
    ``"parked"`` (it could be neither handled nor dead-lettered after every attempt: held aside,
    see the pipeline's docs).
    ``context.state`` carries what layers noted (the retry plugin sets ``"immediate_retries"``).
    Must be cheap: it runs on the hot path.
    """


@hookspec
def mesh_event_dead_lettered(context: Context, event: Event, target: str) -> None:
    """Called after an event was written to its dead-letter destination. Collect-all; return nothing."""


@hookspec
def mesh_invoke_layers(runtime: Runtime) -> InvokeLayer | None:
    """A layer around each invocation the App makes: ``layer(next) -> invoke``, where
    ``invoke(call)`` is async, takes a :class:`~mesh.types.Invocation` and returns the reply's data.

    Called once per App at start; return the layer or ``None``. A layer may add extension
    attributes to ``call.extensions`` before calling ``next`` (every attempt's request carries
    them), and read ``call.outcome``, ``call.attempts`` and ``call.error`` after it returned or
    raised. Requests and replies do not pass through the publish layers: this is where a plugin
    sees invocations. Collect-all: the first plugin's layer is outermost.
    """


@hookspec
def mesh_invocation_outcome(
    runtime: Runtime, side: str, method: str, peer: str, outcome: str, error: BaseException | None
) -> None:
    """Called once per request an App served, and per reply it dropped. Collect-all; return nothing.

    ``side="callee"``: ``outcome`` is ``ok``, ``error`` (the method raised), ``method_not_found``
    (``method`` is then ``"<unknown>"``), ``permission_denied``, ``invalid_argument``,
    ``expired`` (the deadline had passed: not run, no reply) or ``malformed``; ``peer`` is the
    caller's app id. ``side="caller"``: ``late_reply`` (its call had ended), ``malformed_reply``
    ``foreign_reply`` (a reply to a pending call from another source than the called app:
    dropped) or ``rejected_reply`` (its signature did not verify: dropped); ``peer`` is the
    replying app. Must be cheap: it runs on the hot path.
    """


def hook_names() -> list[str]:
    """Every hook this module declares."""
    return sorted(n for n, v in globals().items() if n.startswith("mesh_") and callable(v))


def hook_doc(name: str) -> str:
    """The docstring of a hook."""
    return str(globals()[name].__doc__ or "")
