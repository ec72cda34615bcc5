"""The lab's deliberately broken build (lab/registry.py DS_BROKEN): healthy at first, then
`/healthcheck` false for ever while its backing services are fine. This is what the rollout's
compat gate (a watch window, not one probe) and the canary's soak must catch; a one-shot health
probe right after start passes it."""
from __future__ import annotations

import time

import pytest
import requests

from lab.client import wait_for

from .conftest import BROKEN, JWT_SECRET, V2, StandIn, exec_ok, hs256

pytestmark = pytest.mark.standin

DECAY_AFTER_S = 20  # HEALTH_DECAY_AFTER_S in the stand-in's docservice


def version(node: StandIn) -> dict:
    token = hs256({"c": "version", "exp": int(time.time()) + 60}, JWT_SECRET)
    return requests.post(node.url + "/command", json={"token": token}, timeout=5).json()


def watch(node: StandIn, seconds: float) -> list[tuple[float, str]]:
    """(seconds since the first sample, /healthcheck body) every ~0.5 s for `seconds`."""
    samples: list[tuple[float, str]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        samples.append((time.monotonic() - t0, node.health()))
        time.sleep(0.5)  # sampling cadence, not a wait for correctness
    return samples


def test_broken_build_turns_unhealthy_after_start_and_stays_so(standin) -> None:
    node = standin(BROKEN)  # waits for the first `true`: a one-shot probe passes it
    assert node.container.labels["ooha.ds.defect"] == "healthcheck-decay"
    assert version(node) == {"error": 0, "version": BROKEN}, "it answers its version like a good build"
    wait_for("broken build's /healthcheck turns false", lambda: node.health() == "false",
             DECAY_AFTER_S + 15, interval=0.5, tolerate=(requests.RequestException,))
    assert all(body == "false" for _, body in watch(node, 5)), "false for ever, not a blip"
    out_log = exec_ok(node.container, ["cat", "/var/log/onlyoffice/documentserver/docservice/out.log"])
    assert "defect healthcheck-decay" in out_log, "the docservice log says why"
    # The backing services are fine: the same env on a good build stays healthy.
    good = standin(V2)
    assert good.health() == "true"


def test_broken_build_is_healthy_for_its_first_seconds(standin) -> None:
    """Why a single probe (or a health gate right after a replace) is not enough."""
    node = standin(BROKEN)
    samples = watch(node, 5)
    assert all(body == "true" for _, body in samples), samples
