"""nn.Module paths of the running code, via global forward pre/post hooks (per thread, no strong refs).

Naming: the outermost module called (the root) is named by its class name; modules below it get the
root's ``named_modules()`` names (``"Model.layers.3.moe"``). A module called from a forward but not
registered under the root (a module held in a plain attribute or a local) is named by its class name
after its caller's path (``"Model.layers.3.Helper"``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook


class _ModuleState(threading.local):
    def __init__(self) -> None:
        # (id(module), path) for every module whose forward is running in this thread.
        self.stack: list[tuple[int, str]] = []
        # Names below the current root: id(submodule) -> qualified name.
        self.names: list[dict[int, str]] = []
        self.path: str | None = None


class ModuleTracker:
    """Keeps ``path``: the module path in the calling thread, while installed."""

    def __init__(self) -> None:
        self._state = _ModuleState()
        self._root_names: "weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]]" = weakref.WeakKeyDictionary()
        self._handles: list[Any] = []

    def current(self) -> str | None:
        """The module path in the calling thread, or None outside any module's forward."""
        return self._state.path

    def install(self) -> None:
        """Register the global forward hooks."""
        self._handles = [
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post, always_call=True),
        ]

    def uninstall(self) -> None:
        """Remove the global forward hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _names_of(self, root: torch.nn.Module) -> dict[int, str]:
        names = self._root_names.get(root)
        if names is None:
            names = {id(m): n for n, m in root.named_modules(remove_duplicate=False)}
            self._root_names[root] = names
        return names

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        st = self._state
        cls = type(module).__name__
        if not st.stack:
            names = self._names_of(module)
            st.names.append(names)
            path = cls
        else:
            names = st.names[-1]
            root_path = st.stack[0][1]
            qual = names.get(id(module))
            if qual is not None:
                path = f"{root_path}.{qual}" if qual else root_path
            else:
                path = f"{st.path}.{cls}"
            st.names.append(names)
        st.stack.append((id(module), path))
        st.path = path

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        st = self._state
        # Pop back to this module (a forward that raised inside a child may have skipped its pop).
        mid = id(module)
        while st.stack:
            top, _ = st.stack.pop()
            st.names.pop()
            if top == mid:
                break
        st.path = st.stack[-1][1] if st.stack else None
