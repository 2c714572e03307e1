"""One sandbox cluster: store, controllers, HTTP API server, faults, monitor, kubeconfig."""
from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from .clock import Clock
from .config import SandboxConfig
from .controllers.base import Controller, Manager
from .faults import Faults
from .monitor import Monitor, RequestLog
from .store import Store

log = logging.getLogger("sandbox")

# Modules that each provide CONTROLLERS (controller classes) and DEFAULTERS / VALIDATORS
# ({store type key: fn}); a module missing here simply is not loaded.
CONTROLLER_MODULES = (
    "sandbox.defaults",
    "sandbox.controllers.nodes",
    "sandbox.controllers.workloads",
    "sandbox.controllers.batch",
    "sandbox.controllers.gc",
    "sandbox.controllers.disruption",
)


class SandboxCluster:
    def __init__(self, name: str = "sandbox", config: SandboxConfig | None = None, clock: Clock | None = None) -> None:
        self.name = name
        self.config = config or SandboxConfig()
        self.clock = clock or Clock()
        self.store = Store(self.clock)
        self.faults = Faults()
        self.requests = RequestLog()
        self.monitor = Monitor(self)
        self.manager = Manager(self)
        self.server: Any = None
        self.cloud: Any = None  # the EC2 / Auto Scaling bridge, when attached
        self.tls: Any = None  # a sandbox.tls.SandboxTls, set before start(): serve HTTPS with it
        self.authenticator: Any = None  # checks bearer tokens (sandbox.auth, sandbox.eks); None: accept all
        self.authorizer: Any = None  # checks RBAC (sandbox.rbac.RbacAuthorizer); None: allow all
        self._load_modules()
        self.store.add_listener(self.manager.on_change)
        self.store.add_listener(self.monitor.on_change)

    def _load_modules(self) -> None:
        for module_name in CONTROLLER_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    continue
                raise
            for key, fn in getattr(module, "DEFAULTERS", {}).items():
                self._chain(self.store.defaulters, key, fn)
            for key, fn in getattr(module, "VALIDATORS", {}).items():
                self._chain(self.store.validators, key, fn)
            for cls in getattr(module, "CONTROLLERS", ()):
                self.manager.register(cls(self))

    @staticmethod
    def _chain(table: dict[str, Callable[..., None]], key: str, fn: Callable[..., None]) -> None:
        previous = table.get(key)
        if previous is None:
            table[key] = fn
        else:
            def both(*args: Any, _a=previous, _b=fn) -> None:
                _a(*args)
                _b(*args)

            table[key] = both

    def controller(self, name: str) -> Controller:
        return self.manager.controller(name)

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "SandboxCluster":
        from .server import ApiServer

        self.bootstrap()
        self.manager.start()
        self.server = ApiServer(self, host, port)
        self.server.start()
        log.info("sandbox cluster %s serving on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        if self.cloud is not None:
            self.cloud.stop()
        if self.server is not None:
            self.server.stop()
        self.store.close_all_watches()
        self.manager.stop()

    def __enter__(self) -> "SandboxCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bootstrap(self) -> None:
        """What every cluster has: the system namespaces and the default one."""
        from .resources import NAMESPACES

        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.try_get(NAMESPACES, None, ns) is None:
                self.store.create(NAMESPACES, {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})

    @property
    def url(self) -> str:
        return self.server.url if self.server else ""

    # ------------------------------------------------------------------------------------- helpers
    def kubeconfig(self, user: str = "sandbox-admin") -> dict[str, Any]:
        server: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            server["certificate-authority-data"] = self.tls.ca_data
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": server}],
            "users": [{"name": user, "user": {"token": f"sandbox-token-{self.name}"}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user, "namespace": "default"}}],
            "current-context": self.name,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        import json

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML; kubectl and the Python client both read it.
        target.write_text(json.dumps(self.kubeconfig(), indent=2))
        return target

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Until controllers have nothing queued (timers may still be pending)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.manager.idle():
                time.sleep(settle)
                if self.manager.idle():
                    return True
            time.sleep(0.01)
        return False

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.lock:
                if predicate():
                    return True
            time.sleep(interval)
        return False
