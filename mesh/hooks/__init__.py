"""Plugins: the hook specifications (:mod:`mesh.hooks.spec`) and the manager that calls them
(:mod:`mesh.hooks.manager`, with :class:`~mesh.hooks.manager.Hooks`, one typed method per hook)."""

from __future__ import annotations

from mesh.hooks.manager import BUILTIN_PLUGINS, Hooks, PluginManager
from mesh.hooks.spec import PROJECT, hook_doc, hook_names, hookimpl, hookspec

__all__ = ["BUILTIN_PLUGINS", "PROJECT", "Hooks", "PluginManager", "hook_doc", "hook_names", "hookimpl", "hookspec"]
