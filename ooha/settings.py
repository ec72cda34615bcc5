"""One way to read a layer's data key with its default, a secret, or a required value.

Why: pyinfra applies a deploy's ``data_defaults`` only inside that deploy, but the same
keys are read outside it too (the validation report, preflight input checks, restore,
other layers reading a contract key).  Every layer used to carry its own copy of "data
value, else this layer's default"; the copies drifted (an explicit ``None`` kept or not,
unknown keys raising or not).  The rule now lives here, and each layer binds its defaults:

    _value = Settings(ENDPOINTS_DEFAULTS)
    _value(host, "endpoint_stats_port")

Works with a pyinfra ``Host`` (``.data`` is ``HostData``) and with the unit tests' fakes
(``.data`` a plain dict): only ``data.get`` is needed (and ``data.dict()`` or ``in`` for
``keep_explicit_none``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.exceptions import DeployError


def _has_key(data: Any, key: str) -> bool:
    """True when ``key`` is set in ``data`` at all (even to None)."""
    if hasattr(data, "dict") and callable(data.dict):
        return key in data.dict()
    return key in data


def setting(target: Any, key: str, *defaults: Mapping[str, Any], keep_explicit_none: bool = False,
            optional: bool = False) -> Any:
    """``data_value(target.data, ...)``: the usual form, for a pyinfra Host or a fake with ``.data``."""
    return data_value(target.data, key, *defaults, keep_explicit_none=keep_explicit_none, optional=optional)


def data_value(data: Any, key: str, *defaults: Mapping[str, Any], keep_explicit_none: bool = False,
               optional: bool = False) -> Any:
    """``target``'s data value of ``key``, else the default from the first of ``defaults`` holding it.

    A value of ``None`` counts as unset (pyinfra's ``data.get`` cannot tell an absent key from
    ``None``), unless ``keep_explicit_none``: then a key the inventory sets to None stays None
    (the base layer's ``apt_proxy = None`` means "remove the proxy", not "use the default").
    A key in none of ``defaults`` is a KeyError (a typo should fail loudly), unless
    ``optional``: then it gives None.
    """
    value = data.get(key)
    if value is not None or (keep_explicit_none and _has_key(data, key)):
        return value
    for mapping in defaults:
        if key in mapping:
            return mapping[key]
    if optional:
        return None
    raise KeyError(key)


class Settings:
    """``setting`` bound to one layer's defaults (and the semantics that layer relies on).

    A layer writes ``_value = Settings(LAYER_DEFAULTS, CONTRACT_DEFAULTS)`` once and calls
    ``_value(target, key)``, so the lookup rule is never copied into a layer again.
    """

    def __init__(self, *defaults: Mapping[str, Any], keep_explicit_none: bool = False, optional: bool = False) -> None:
        self.defaults: tuple[Mapping[str, Any], ...] = defaults
        self.keep_explicit_none = keep_explicit_none
        self.optional = optional

    def __call__(self, target: Any, key: str) -> Any:
        return setting(target, key, *self.defaults, keep_explicit_none=self.keep_explicit_none, optional=self.optional)

    def default(self, key: str) -> Any:
        """The default of ``key`` alone (for "fix: e.g. <default>" in problem lines)."""
        for mapping in self.defaults:
            if key in mapping:
                return mapping[key]
        raise KeyError(key)


def secret(target: Any, name: str) -> str:
    """``target.data['secrets'][name]`` as text, '' when the secrets or the name are missing.

    Secrets come from the secrets file (ooha/secrets.py) as host data ``secrets``; a layer
    reports a missing one in its ``input_problems`` rather than failing on a KeyError.
    """
    secrets = target.data.get("secrets") or {}
    return str((secrets.get(name) if hasattr(secrets, "get") else None) or "")


def required_secret(target: Any, name: str) -> str:
    """``secret`` that must be set: a DeployError naming host, field and fix when it is not."""
    value = secret(target, name)
    if not value:
        raise DeployError(f"{target.name}: secrets.{name}: missing; fix: add {name} to the secrets file")
    return value


def required(target: Any, key: str, *defaults: Mapping[str, Any], fix: str = "set it in the inventory") -> Any:
    """``setting`` that must not end up None or empty: a DeployError "HOST: KEY: missing; fix: FIX"."""
    value = setting(target, key, *defaults, optional=True)
    if value is None or value == "":
        raise DeployError(f"{target.name}: {key}: missing; fix: {fix}")
    return value
