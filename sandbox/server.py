"""The HTTP face of a sandbox cluster: the Kubernetes REST protocol, as kubectl and client-go speak it.

Served: discovery (/version, /api, /apis, group versions), get, list (label and field selectors,
limit/continue), watch (chunked JSON event streams resuming from a resourceVersion), create, replace,
patch (JSON, merge, strategic merge), delete (grace period, propagationPolicy, preconditions),
deletecollection, the status, scale and eviction subresources, server-side Table printing for
``kubectl get``, and ``dryRun=All``. Errors are ``Status`` objects with the real server's codes.

Sandbox-only endpoints live under ``/_sandbox/`` (request log, invariants, faults) for tests.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import errors, tables
from .errors import ApiError
from .monitor import WRITE_VERBS
from .patch import apply_patch
from .resources import BY_GVR, NAMESPACES, PODS, RESOURCE_TYPES, ResourceType, groups
from .selectors import make_filter, parse_field_selector, parse_label_selector
from .store import CLOSED, WatchEvent

if TYPE_CHECKING:
    from .cluster import SandboxCluster

log = logging.getLogger("sandbox.server")
MAX_BODY = 3 * 1024 * 1024  # the apiserver's request size limit
# Types whose status the apiserver clears on create (their controllers or kubelets own it).
STATUS_RESET_ON_CREATE = frozenset(
    {"pods", "deployments.apps", "replicasets.apps", "statefulsets.apps", "daemonsets.apps", "jobs.batch", "cronjobs.batch", "poddisruptionbudgets.policy"}
)


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the apiserver uses for query parameters."""
    return (value or "") in ("1", "t", "T", "true", "TRUE", "True")


class Route:
    """A parsed resource path."""

    def __init__(self, rt: ResourceType, namespace: str | None, name: str | None, subresource: str | None) -> None:
        self.rt = rt
        self.namespace = namespace
        self.name = name
        self.subresource = subresource

    @property
    def resource_label(self) -> str:
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


def parse_resource_path(parts: list[str]) -> tuple[Route | None, bool]:
    """Path segments after the prefix -> Route; the bool says whether it was a legacy /watch/ path."""
    legacy_watch = False
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None, False
    if rest[:1] == ["watch"]:
        legacy_watch, rest = True, rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_GVR:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None, legacy_watch
    rt = BY_GVR.get((group, version, rest[0]))
    if rt is None:
        return None, legacy_watch
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if len(rest) > 3 or (sub and sub not in rt.subresources and not (rt.plural == "namespaces" and sub == "finalize")):
        return None, legacy_watch
    if rt.namespaced and namespace is None and name is not None:
        return None, legacy_watch
    return Route(rt, namespace, name, sub), legacy_watch


class ApiServer:
    def __init__(self, cluster: "SandboxCluster", host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
        handler = type("BoundHandler", (Handler,), {"cluster": cluster})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.scheme = "http"
        if cluster.tls is not None:
            # The handshake happens on the handler's thread at its first read, never in accept().
            self.httpd.socket = cluster.tls.server_context().wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.cluster.store.close_all_watches()
        self.httpd.shutdown()
        self.httpd.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: "SandboxCluster"
    server_version = "sandbox-apiserver"

    # Quiet: the request log is the record.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------------------------- plumbing
    def _send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        headers = {}
        if err.code == 429 or err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after or 1)
        self._send_json(err.code, err.status(), headers)

    def _consume_body(self) -> None:
        """Read the request body off the socket up front, whatever the answer will be.

        An error answered before the body was read would leave it on a keep-alive connection,
        where it would be taken for the next request line.
        """
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "Request entity too large: limit is 3145728", reason="RequestEntityTooLarge")
        self._raw_body = self.rfile.read(length) if length else b""

    def _read_body(self) -> Any:
        raw = self._raw_body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            ctype = self.headers.get("Content-Type", "")
            if "yaml" in ctype:
                raise ApiError(415, "YAML bodies are not supported by the sandbox; send JSON", reason="UnsupportedMediaType") from exc
            raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from exc

    def _dispatch(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        user_agent = self.headers.get("User-Agent", "")
        record: dict[str, Any] = {"verb": method.lower(), "resource": "", "namespace": "", "name": "", "code": 0}
        started = time.time()
        self._raw_body = b""
        try:
            self._consume_body()
            if parts[:1] == ["_sandbox"]:
                self._admin(method, parts[1:], query)
                return
            self._authenticate(method, parts, query, record)
            if method == "GET" and self._discovery(parts):
                return
            route, legacy_watch = parse_resource_path(parts)
            if route is None:
                raise ApiError(404, "the server could not find the requested resource", reason="NotFound", details={})
            verb = self._verb(method, route, query, legacy_watch)
            record.update(verb=verb, resource=route.resource_label, group=route.rt.group, namespace=route.namespace or "", name=route.name or "")
            self._authorize(verb, route, query, record.get("user", ""))
            self._inject_faults(verb, route)
            if verb in WRITE_VERBS and (route.namespace or (route.rt.key == NAMESPACES and route.name)) in self.cluster.config.protected_namespaces:
                evicted = self.cluster.store.try_get(route.rt.key, route.namespace, route.name) if route.subresource == "eviction" else None
                node = ((evicted or {}).get("spec") or {}).get("nodeName") or ""
                self.cluster.monitor.protected_write(verb, route.resource_label, route.namespace or route.name or "", route.name or "", user_agent, node)
            code = self._serve(method, verb, route, query)
            record["code"] = code
        except ApiError as err:
            record["code"] = err.code
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            record["code"] = 499
        except Exception as exc:  # noqa: BLE001 - never a traceback on the wire
            log.exception("internal error serving %s %s", method, self.path)
            record["code"] = 500
            self._send_error(ApiError(500, f"Internal error occurred: {exc}"))
        finally:
            if record["resource"]:
                self.cluster.requests.add(time=started, user_agent=user_agent, **record)

    def _authenticate(self, method: str, parts: list[str], query: dict[str, str], record: dict[str, Any]) -> None:
        """Authenticate first, as the API server does, when the cluster checks tokens (``sandbox.auth``).

        Anonymous requests are refused too: EKS (1.32 on) allows anonymous access to the health
        endpoints only, which the sandbox does not serve. A refusal is logged like any request.
        """
        authenticator = self.cluster.authenticator
        if authenticator is None:
            return
        from .auth import TokenRejected

        try:
            record["user"] = authenticator.authenticate(self.headers.get("Authorization"))
        except TokenRejected:
            route, legacy_watch = parse_resource_path(parts)
            if route is not None:
                verb = self._verb(method, route, query, legacy_watch)
                record.update(verb=verb, resource=route.resource_label, namespace=route.namespace or "", name=route.name or "")
            raise ApiError(401, "Unauthorized") from None

    def _authorize(self, verb: str, route: Route, query: dict[str, str], user: str) -> None:
        """Authorize after authentication, as the API server does, when the cluster checks RBAC
        (``sandbox.rbac``); a refusal is a 403 Status and is logged like any request."""
        authorizer = self.cluster.authorizer
        if authorizer is None:
            return
        from .rbac import Request

        name = route.name or ""
        if not name and verb in ("list", "watch", "deletecollection"):
            # As the API server's RequestInfoFactory: a metadata.name field selector names the object.
            for requirement in (query.get("fieldSelector") or "").split(","):
                key, _, value = requirement.partition("=")
                if key.strip() == "metadata.name":  # "=" or "=="; "!=" leaves "metadata.name!"
                    name = value.removeprefix("=").strip()
        authorizer.authorize(Request(user, verb, route.rt.group, route.rt.plural, route.subresource or "", route.namespace or "", name))

    @staticmethod
    def _verb(method: str, route: Route, query: dict[str, str], legacy_watch: bool) -> str:
        if method == "GET":
            if legacy_watch or _parse_bool(query.get("watch")):
                return "watch"
            return "get" if route.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if route.name else "deletecollection"
        raise ApiError(405, "the server does not allow this method on the requested resource", reason="MethodNotAllowed")

    def _inject_faults(self, verb: str, route: Route) -> None:
        faults = self.cluster.faults
        if faults.latency_seconds:
            time.sleep(faults.latency_seconds)
        code = faults.error_for(verb, route.resource_label, route.namespace, route.name)
        if code is None:
            return
        if code == 429:
            raise ApiError(429, "Too many requests, please try again later.", retry_after=1)
        if code == 409:
            raise errors.conflict(route.rt.plural, route.name or "", "the object has been modified; please apply your changes to the latest version and try again", route.rt.group)
        if code == 503:
            raise ApiError(503, "the server is currently unable to handle the request", reason="ServiceUnavailable")
        if code == 504:
            raise ApiError(504, "the server was unable to return a response in the time allotted", reason="Timeout")
        raise ApiError(code, "Internal error occurred: injected fault (sandbox)", reason=errors.REASONS.get(code, "InternalError"))

    # ------------------------------------------------------------------------------------ discovery
    def _discovery(self, parts: list[str]) -> bool:
        major, minor = self.cluster.config.server_version
        if parts == ["version"]:
            self._send_json(
                200,
                {
                    "major": str(major),
                    "minor": str(minor),
                    "gitVersion": f"v{major}.{minor}.0",
                    "gitCommit": "sandbox",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.22.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
            return True
        if parts in (["healthz"], ["readyz"], ["livez"]):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        if parts == ["api"]:
            self._send_json(
                200,
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.headers.get("Host", "")}]},
            )
            return True
        if parts == ["apis"]:
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g, vs) for g, vs in groups().items()]})
            return True
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups():
            g = self._group(parts[1], groups()[parts[1]])
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **{k: v for k, v in g.items() if k != "kind"}})
            return True
        if parts == ["api", "v1"]:
            self._send_json(200, self._resource_list("", "v1"))
            return True
        if len(parts) == 3 and parts[0] == "apis" and parts[1] in groups() and parts[2] in groups()[parts[1]]:
            self._send_json(200, self._resource_list(parts[1], parts[2]))
            return True
        return False

    @staticmethod
    def _group(name: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}

    @staticmethod
    def _resource_list(group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for rt in RESOURCE_TYPES:
            if rt.group != group or rt.version != version:
                continue
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                if sub == "eviction":
                    resources.append({"name": f"{rt.plural}/eviction", "singularName": "", "namespaced": True, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
                elif sub == "scale":
                    resources.append({"name": f"{rt.plural}/scale", "singularName": "", "namespaced": rt.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
                else:
                    resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # ------------------------------------------------------------------------------------ resources
    def _serve(self, method: str, verb: str, route: Route, query: dict[str, str]) -> int:
        store = self.cluster.store
        rt = route.rt
        dry_run = query.get("dryRun") == "All"
        if verb == "get":
            obj = store.get(rt.key, route.namespace, route.name)  # type: ignore[arg-type]
            if route.subresource == "scale":
                return self._reply(200, self._scale(obj))
            if route.subresource is None and self._wants_table():
                return self._reply(200, tables.to_table(rt.key, [obj], self.cluster.clock.time(), {"resourceVersion": obj["metadata"]["resourceVersion"]}))
            return self._reply(200, obj)
        if verb == "list":
            return self._list(route, query)
        if verb == "watch":
            return self._watch(route, query)
        if verb == "create":
            body = self._read_body()
            if route.subresource == "eviction":
                return self._evict(route, body)
            if route.name is not None and route.subresource is None:
                raise ApiError(405, "the server does not allow this method on the requested resource", reason="MethodNotAllowed")
            if not isinstance(body, dict):
                raise ApiError(400, "the body of the request must be an object")
            self._check_kind(rt, body)
            if rt.key in STATUS_RESET_ON_CREATE:
                body = {k: v for k, v in body.items() if k != "status"}  # status is the system's to write
            if dry_run:
                return self._reply(201, self._dry_create(rt, body, route.namespace))
            return self._reply(201, store.create(rt.key, body, namespace=route.namespace))
        if verb in ("update", "patch"):
            body = self._read_body()
            return self._update(verb, route, body, dry_run)
        if verb == "delete":
            return self._delete(route, query, dry_run)
        if verb == "deletecollection":
            return self._delete_collection(route, query, dry_run)
        raise ApiError(405, "method not allowed", reason="MethodNotAllowed")

    def _wants_table(self) -> bool:
        return "as=Table" in self.headers.get("Accept", "")

    def _reply(self, code: int, body: Any) -> int:
        self._send_json(code, body)
        return code

    @staticmethod
    def _check_kind(rt: ResourceType, body: dict[str, Any]) -> None:
        if body.get("kind") and body["kind"] != rt.kind:
            raise ApiError(400, f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version ({rt.api_version})" if body.get("apiVersion") not in (None, rt.api_version) else f"{body['kind']} in body does not match {rt.kind}")

    def _filter(self, route: Route, query: dict[str, str]) -> tuple[Any, str | None]:
        label_sel = parse_label_selector(query.get("labelSelector"))
        field_sel = parse_field_selector(query.get("fieldSelector"), route.rt.key)
        node_name = None
        if route.rt.key == PODS:
            for req in field_sel:
                if req.path == "spec.nodeName" and req.op == "=":
                    node_name = req.value
        return make_filter(label_sel, field_sel), node_name

    def _list(self, route: Route, query: dict[str, str]) -> int:
        matches, node_name = self._filter(route, query)
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise ApiError(400, f"invalid limit: {query.get('limit')}") from exc
        items, rv, cont, remaining = self.cluster.store.list(
            route.rt.key, route.namespace, matches, node_name=node_name, limit=limit, continue_token=query.get("continue") or None
        )
        list_meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            list_meta["continue"] = cont
            list_meta["remainingItemCount"] = remaining
        if self._wants_table():
            return self._reply(200, tables.to_table(route.rt.key, items, self.cluster.clock.time(), list_meta))
        body = {"kind": f"{route.rt.kind}List", "apiVersion": route.rt.api_version, "metadata": list_meta, "items": items}
        return self._reply(200, body)

    def _watch(self, route: Route, query: dict[str, str]) -> int:
        matches, _ = self._filter(route, query)
        if route.name:  # GET /watch/namespaces/ns/pods/name (legacy) watches one object
            name = route.name
            base = matches
            matches = lambda o: o["metadata"]["name"] == name and base(o)  # noqa: E731
        rv_param = query.get("resourceVersion") or ""
        since = None if rv_param in ("", "0") else int(rv_param) if rv_param.isdigit() else None
        if rv_param and since is None and rv_param != "0":
            raise ApiError(400, f"invalid resource version: {rv_param}")
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = _parse_bool(query.get("allowWatchBookmarks"))
        faults = self.cluster.faults
        cut_events = faults.watch_cut_after_events
        cut_seconds = faults.watch_cut_after_seconds
        store = self.cluster.store
        try:
            watcher = store.watch(route.rt.key, route.namespace, matches, since, send_initial=since is None and rv_param == "" and _parse_bool(query.get("sendInitialEvents")))
        except ApiError as err:
            if err.code != 410:
                raise
            # The real server answers 200 and then an ERROR event carrying the 410 Status.
            self._start_stream()
            self._write_chunk({"type": "ERROR", "object": err.status()})
            self._end_stream()
            return 200
        self._start_stream()
        sent = 0
        deadline = time.monotonic() + timeout
        if cut_seconds is not None:
            deadline = min(deadline, time.monotonic() + cut_seconds)
        last_bookmark = time.monotonic()
        try:
            while time.monotonic() < deadline:
                item = watcher.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
                if item is CLOSED:
                    break
                if item is None:
                    if bookmarks and time.monotonic() - last_bookmark > 5:
                        last_bookmark = time.monotonic()
                        self._write_chunk({"type": "BOOKMARK", "object": {"kind": route.rt.kind, "apiVersion": route.rt.api_version, "metadata": {"resourceVersion": str(store.resource_version)}}})
                    continue
                assert isinstance(item, WatchEvent)
                self._write_chunk({"type": item.type, "object": item.object})
                sent += 1
                if cut_events is not None and sent >= cut_events:
                    break
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            store.stop_watch(watcher)
        self.close_connection = True
        return 200

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _update(self, verb: str, route: Route, body: Any, dry_run: bool) -> int:
        store = self.cluster.store
        rt = route.rt
        if route.name is None:
            raise ApiError(405, "the server does not allow this method on the requested resource", reason="MethodNotAllowed")
        if route.subresource == "eviction":
            raise ApiError(405, "eviction only supports create", reason="MethodNotAllowed")
        with store.lock:
            current = store.get(rt.key, route.namespace, route.name)
            if route.subresource == "scale":
                scale = self._scale(current)
                new_scale = apply_patch(scale, body, self.headers.get("Content-Type", "")) if verb == "patch" else body
                replicas = (new_scale or {}).get("spec", {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise errors.invalid("Scale", route.name, [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")], "autoscaling")
                updated = copy.deepcopy(current)
                updated["spec"]["replicas"] = replicas
                if dry_run:
                    return self._reply(200, self._scale(updated))
                return self._reply(200, self._scale(store.update(rt.key, updated, check_rv=False)))
            if verb == "patch":
                if body is None:
                    raise ApiError(400, "the body of the request was empty")
                new = apply_patch(current, body, self.headers.get("Content-Type", ""))
                if not isinstance(new, dict):
                    raise ApiError(422, "the patched object is not an object")
                # A patch that does not name a resourceVersion applies to the latest one.
                check_rv = bool((body if isinstance(body, dict) else {}).get("metadata", {}).get("resourceVersion")) if verb == "patch" else True
            else:
                if not isinstance(body, dict):
                    raise ApiError(400, "the body of the request must be an object")
                self._check_kind(rt, body)
                new = body
                check_rv = True
                if not new.get("metadata", {}).get("resourceVersion") and rt.key not in (PODS,):
                    # PUT without resourceVersion is an unconditional update; the apiserver allows it
                    # for most types.
                    check_rv = False
            new_meta = new.setdefault("metadata", {})
            if new_meta.get("name") not in (None, route.name):
                raise errors.bad_request(f"the name of the object ({new_meta.get('name')}) does not match the name on the URL ({route.name})")
            new_meta["name"] = route.name
            if rt.namespaced:
                new_meta["namespace"] = route.namespace
            if dry_run:
                preview = copy.deepcopy(new)
                return self._reply(200, preview)
            result = store.update(rt.key, new, subresource=route.subresource if route.subresource == "status" else None, check_rv=check_rv)
            return self._reply(200, result)

    @staticmethod
    def _scale(obj: dict[str, Any]) -> dict[str, Any]:
        sel = obj.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in obj["metadata"]},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": ",".join(f"{k}={v}" for k, v in sel.items())},
        }

    def _delete_options(self, query: dict[str, str]) -> dict[str, Any]:
        body = self._read_body() or {}
        if not isinstance(body, dict):
            raise ApiError(400, "DeleteOptions must be an object")
        if "gracePeriodSeconds" in query:
            body["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if "propagationPolicy" in query:
            body["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            body["orphanDependents"] = query["orphanDependents"] == "true"
        return body

    def _delete(self, route: Route, query: dict[str, str], dry_run: bool) -> int:
        store = self.cluster.store
        rt = route.rt
        if route.subresource:
            raise ApiError(405, "the server does not allow this method on the requested resource", reason="MethodNotAllowed")
        opts = self._delete_options(query)
        if dry_run:
            return self._reply(200, store.get(rt.key, route.namespace, route.name))  # type: ignore[arg-type]
        obj, removed = store.delete(
            rt.key,
            route.namespace,
            route.name,  # type: ignore[arg-type]
            grace_period=opts.get("gracePeriodSeconds"),
            propagation=opts.get("propagationPolicy"),
            preconditions=opts.get("preconditions"),
            orphan_dependents=opts.get("orphanDependents"),
        )
        if removed and rt.key not in (PODS, NAMESPACES):
            return self._reply(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": route.name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
                },
            )
        return self._reply(200, obj)

    def _delete_collection(self, route: Route, query: dict[str, str], dry_run: bool) -> int:
        store = self.cluster.store
        matches, node_name = self._filter(route, query)
        opts = self._delete_options(query)
        items, rv, _, _ = store.list(route.rt.key, route.namespace, matches, node_name=node_name)
        if not dry_run:
            for obj in items:
                try:
                    store.delete(
                        route.rt.key,
                        obj["metadata"].get("namespace"),
                        obj["metadata"]["name"],
                        grace_period=opts.get("gracePeriodSeconds"),
                        propagation=opts.get("propagationPolicy"),
                    )
                except ApiError as err:
                    if err.code != 404:
                        raise
        return self._reply(200, {"kind": f"{route.rt.kind}List", "apiVersion": route.rt.api_version, "metadata": {"resourceVersion": str(rv)}, "items": items})

    def _evict(self, route: Route, body: Any) -> int:
        from .controllers.disruption import evict

        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be an Eviction")
        name = body.get("metadata", {}).get("name")
        if name and name != route.name:
            raise errors.bad_request("name in URL does not match name in Eviction object")
        return self._reply(201, evict(self.cluster, route.namespace or "", route.name or "", body))

    def _dry_create(self, rt: ResourceType, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        store = self.cluster.store
        obj = copy.deepcopy(body)
        m = obj.setdefault("metadata", {})
        if rt.namespaced:
            m["namespace"] = namespace or m.get("namespace") or "default"
        if not m.get("name") and not m.get("generateName"):
            raise errors.invalid(rt.kind, "", [("metadata.name", "Required value: name or generateName is required")], rt.group)
        if m.get("name") and store.try_get(rt.key, m.get("namespace"), m["name"]) is not None:
            raise errors.already_exists(rt.plural, m["name"], rt.group)
        if rt.key in store.validators:
            store.validators[rt.key](obj, None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return obj

    # ---------------------------------------------------------------------------------------- admin
    def _admin(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        cluster = self.cluster
        if parts == ["requests"] and method == "GET":
            self._send_json(200, cluster.requests.as_dicts(int(query.get("since") or 0)))
        elif parts == ["monitor"] and method == "GET":
            self._send_json(200, cluster.monitor.report())
        elif parts == ["monitor"] and method == "DELETE":
            cluster.monitor.reset()
            self._send_json(200, cluster.monitor.report())
        elif parts == ["faults"] and method == "GET":
            self._send_json(200, cluster.faults.describe())
        elif parts == ["faults"] and method in ("POST", "PUT"):
            cluster.faults.configure(self._read_body() or {})
            self._send_json(200, cluster.faults.describe())
        elif parts == ["faults"] and method == "DELETE":
            cluster.faults.clear()
            self._send_json(200, cluster.faults.describe())
        else:
            raise ApiError(404, "no such sandbox endpoint")
