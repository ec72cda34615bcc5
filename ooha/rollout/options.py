"""The rollout jobs' data keys: defaults, validation (for the preflight) and the gates' limits.

Why one pydantic model: deploys/patch.py and deploys/rollback.py take these keys from the
inventory or ``--data``; the preflight must name every bad one before pyinfra connects, and
the driver must read the same values with the same defaults.  Thresholds and why they are
what they are: docs/architecture.md "Day-2 jobs: the rollout engine" and issue 11's note.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ooha.rollout.gates import Limits
from ooha.rollout.lock import timing_problems

ROLLOUT_DEFAULTS: dict[str, Any] = {
    # nodes replaced together (always of one AZ); 1 = one node at a time
    "rollout_max_per_wave": 1,
    # seconds a replaced node soaks under real traffic before the next wave
    "rollout_soak_seconds": 60,
    # seconds the replaced node has to run the target and answer /healthcheck true
    "rollout_health_timeout_seconds": 240,
    # editing sessions one node carries; the nodes that stay up must take the wave's sessions
    "rollout_node_capacity": 500,
    # share of that capacity kept free while a wave is out
    "rollout_capacity_headroom": 0.2,
    # the synchronous standby's replay lag the preflight accepts (the postgres layer's bound)
    "rollout_max_sync_lag_bytes": 16 * 1024 * 1024,
    # age of the newest PostgreSQL backup the preflight accepts (a day plus a margin)
    "rollout_max_backup_age_seconds": 26 * 3600,
    # upstream errors / requests to the soaking node at ANY load balancer
    "rollout_max_upstream_error_rate": 0.01,
    # seconds between soak samples
    "rollout_sample_seconds": 5,
    # the compatibility gate: on (default); false = forced off (recorded in the journal)
    "rollout_compat": True,
    # seconds the compat gate watches the throwaway container's /healthcheck
    "rollout_compat_watch_seconds": 30,
    # a lock whose heartbeat is older is stale (never taken over: broken explicitly)
    "rollout_lock_stale_seconds": 300,
    "rollout_lock_heartbeat_seconds": 30,
    # CA bundle on the controller for the synthetic session through the front door (None: system CAs)
    "rollout_front_door_ca": None,
    # the id of a STALE lock to break (printed by the refusal)
    "rollout_break_lock": None,
}


class RolloutOptions(BaseModel):
    """Typed rollout keys; pydantic's messages become one preflight line per bad key."""

    model_config = ConfigDict(extra="ignore")

    rollout_max_per_wave: int = Field(ROLLOUT_DEFAULTS["rollout_max_per_wave"], ge=1, le=10)
    rollout_soak_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_soak_seconds"], ge=10, le=86400)
    rollout_health_timeout_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_health_timeout_seconds"], ge=30, le=3600)
    rollout_node_capacity: int = Field(ROLLOUT_DEFAULTS["rollout_node_capacity"], ge=1)
    rollout_capacity_headroom: float = Field(ROLLOUT_DEFAULTS["rollout_capacity_headroom"], ge=0, lt=1)
    rollout_max_sync_lag_bytes: int = Field(ROLLOUT_DEFAULTS["rollout_max_sync_lag_bytes"], ge=0)
    rollout_max_backup_age_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_max_backup_age_seconds"], ge=60)
    rollout_max_upstream_error_rate: float = Field(ROLLOUT_DEFAULTS["rollout_max_upstream_error_rate"], ge=0, le=1)
    rollout_sample_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_sample_seconds"], ge=1, le=60)
    rollout_compat: bool = ROLLOUT_DEFAULTS["rollout_compat"]
    rollout_compat_watch_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_compat_watch_seconds"], ge=5, le=600)
    rollout_lock_stale_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_lock_stale_seconds"], ge=30)
    rollout_lock_heartbeat_seconds: int = Field(ROLLOUT_DEFAULTS["rollout_lock_heartbeat_seconds"], ge=5)
    rollout_break_lock: str | None = None
    rollout_front_door_ca: str | None = None

    @field_validator("rollout_break_lock")
    @classmethod
    def _rollout_id(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("-", "").isalnum():
            raise ValueError("is not a rollout id (letters, digits and '-')")
        return value

    def limits(self) -> Limits:
        """The gates' thresholds."""
        return Limits(max_sync_lag_bytes=self.rollout_max_sync_lag_bytes,
                      max_backup_age_s=self.rollout_max_backup_age_seconds,
                      node_capacity_sessions=self.rollout_node_capacity,
                      capacity_headroom=self.rollout_capacity_headroom,
                      max_upstream_error_rate=self.rollout_max_upstream_error_rate,
                      min_soak_samples=max(1, min(3, self.rollout_soak_seconds // self.rollout_sample_seconds)))


def _values(data: Any) -> dict[str, Any]:
    """The rollout keys the data sets (None = unset: the default applies)."""
    return {key: data.get(key) for key in ROLLOUT_DEFAULTS if data.get(key) is not None}


def rollout_options(data: Any) -> RolloutOptions:
    """The validated options of ``data`` (a pyinfra HostData or a dict); ValueError when invalid."""
    problems = option_problems(data)
    if problems:
        raise ValueError("; ".join(problems))
    return RolloutOptions(**_values(data))


def option_problems(data: Any) -> list[str]:
    """One "FIELD: problem; fix: ..." line per bad rollout key (no host: the keys are global)."""
    try:
        options = RolloutOptions(**_values(data))
    except ValidationError as error:
        lines = []
        for item in error.errors():
            key = str(item["loc"][0]) if item["loc"] else "rollout"
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{key}: {data.get(key)!r}: {message}; fix: --data {key}=<valid value> "
                         f"(default {ROLLOUT_DEFAULTS.get(key)!r})")
        return lines
    return [line.removeprefix("all: ")
            for line in timing_problems(options.rollout_lock_stale_seconds, options.rollout_lock_heartbeat_seconds)]
