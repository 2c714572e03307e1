"""The three PATCH flavours the apiserver accepts: JSON patch, JSON merge patch, strategic merge patch."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .errors import ApiError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# patchMergeKey of the list fields whose patchStrategy is "merge" (from the API types' struct tags).
# Lists not named here are replaced wholesale, as in the real strategic merge.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "taints": "key",
    "ownerReferences": "uid",
    "addresses": "type",
    "resourceClaims": "name",
    "ports": "containerPort",  # container ports; Service ports use "port" (handled below)
}
# Lists of scalars with patchStrategy "merge": union of values.
MERGE_SCALAR_LISTS = frozenset({"finalizers"})


def apply_patch(original: dict[str, Any], patch_body: Any, content_type: str) -> dict[str, Any]:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == JSON_PATCH:
        if not isinstance(patch_body, list):
            raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            return jsonpatch.apply_patch(original, patch_body)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise ApiError(422, f"the server rejected our request due to an error in our request: {exc}") from exc
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:  # type: ignore[attr-defined]
            raise ApiError(422, f"the server rejected our request due to an error in our request: {exc}") from exc
    if not isinstance(patch_body, dict):
        raise ApiError(400, "json: cannot unmarshal array into Go value of type map[string]interface {}")
    if ctype == MERGE_PATCH:
        return merge_patch(original, patch_body)
    if ctype == STRATEGIC_MERGE_PATCH:
        return strategic_merge(original, patch_body, path=())
    if ctype == APPLY_PATCH:
        raise ApiError(415, "server-side apply is not supported by the sandbox cluster", reason="UnsupportedMediaType")
    raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}", reason="UnsupportedMediaType")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, path: tuple[str, ...]) -> str | None:
    if field == "ports" and "spec" in path and "template" not in path and "containers" not in path:
        return "port"  # Service.spec.ports
    return MERGE_KEYS.get(field)


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return copy.deepcopy(patch) if not isinstance(patch, dict) else _strip_directives(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = strategic_merge(current if isinstance(current, dict) else {}, value, path + (key,))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, current if isinstance(current, list) else [], value, path)
        else:
            result[key] = value
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, original: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    if field in MERGE_SCALAR_LISTS:
        out = list(original)
        for v in patch:
            if v not in out:
                out.append(v)
        return out
    merge_key = _merge_key(field, path)
    if merge_key is None or not all(isinstance(v, dict) for v in patch):
        if len(patch) == 1 and isinstance(patch[0], dict) and patch[0].get("$patch") == "replace":
            return []
        return [_strip_directives(v) if isinstance(v, dict) else v for v in patch]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip_directives(v) for v in patch if v.get("$patch") != "replace"]
    out = [copy.deepcopy(v) for v in original]
    for item in patch:
        key_value = item.get(merge_key)
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(merge_key) == key_value), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip_directives(item))
        else:
            out[idx] = strategic_merge(out[idx], item, path + (field,))
    return out


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k.startswith("$setElementOrder/") or k in ("$patch", "$retainKeys") or k.startswith("$deleteFromPrimitiveList/"))
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
