"""Admission control's capacity estimate under a batched model: 16 closed-loop clients whose
requests complete in bursts, one per batch (a transformer), on a simulated clock."""

from __future__ import annotations

import pytest

from aduan.service.guard import AdmissionControl

CLIENTS = 16
SPREAD_S = 0.001  # the answers of one batch leave the event loop one after the other


def simulate(
    gate: AdmissionControl, batch_s: float, seconds: float
) -> list[tuple[float, float | None, float, float]]:
    """Each cycle one batch answers all 16 clients, which send again at once; returns, for
    every arrival after the first 15 s, (true rate, measured rate, estimated wait, inside)."""
    cycle = batch_s + CLIENTS * SPREAD_S
    entered = [0.0] * CLIENTS
    for _ in range(CLIENTS):
        gate._enter(0.0)
    seen = []
    start = 0.0
    while start < seconds:
        for client in range(CLIENTS):
            now = start + batch_s + client * SPREAD_S
            gate._leave(now, entered[client])
            arrival = now + SPREAD_S / 2
            if arrival > 15.0:
                rate = gate.rate(arrival)
                seen.append(
                    (CLIENTS / cycle, rate, gate.estimated_wait(arrival), float(gate.inflight))
                )
            gate._enter(arrival)
            entered[client] = arrival
        start += cycle
    return seen


def app(scope, receive, send):  # never called: the clock is simulated
    raise AssertionError


@pytest.mark.parametrize("batch_s", [0.3, 0.8, 1.5])
def test_the_rate_is_the_batched_capacity_within_a_sixth(batch_s: float) -> None:
    gate = AdmissionControl(app, max_wait_s=2.0, max_inflight=512)
    seen = simulate(gate, batch_s, 40.0)
    assert seen
    for true, measured, _, _ in seen:
        assert measured is not None
        assert abs(measured - true) / true < 1 / 6, (true, measured)


def test_a_steady_load_the_service_carries_is_not_shed() -> None:
    # 1.5 s batches: the 15 others inside wait ~1.4 s, within a 1.7 s budget. A 2 s window
    # holds one burst of 16 completions, reads 8/s and a 1.9 s wait: it shed this load.
    def sheds(cycles: int) -> int:
        gate = AdmissionControl(app, max_wait_s=1.7, max_inflight=512)
        gate.CYCLES = cycles
        seen = simulate(gate, 1.5, 40.0)
        return sum(
            wait > gate.max_wait_s and inside >= gate.min_inflight for *_, wait, inside in seen
        )

    assert sheds(AdmissionControl.CYCLES) == 0
    assert sheds(0) > 0  # the fixed 2 s window (CYCLES 0): the fault this guards against


def test_the_window_follows_the_latency_within_bounds() -> None:
    gate = AdmissionControl(app, max_wait_s=2.0, max_inflight=512)
    assert gate.window() == AdmissionControl.WINDOW_S  # nothing measured yet
    gate._enter(0.0)
    gate._leave(0.05, 0.0)
    assert gate.window() == AdmissionControl.WINDOW_S  # 10 x 50 ms is under the floor
    for i in range(40):
        gate._enter(1.0 + i)
        gate._leave(1.0 + i + 1.2, 1.0 + i)
    assert gate.window() == pytest.approx(12.0)
    for i in range(40):
        gate._enter(100.0 + i)
        gate._leave(100.0 + i + 9.0, 100.0 + i)
    assert gate.window() == AdmissionControl.MAX_WINDOW_S


def test_idle_time_inside_the_window_is_not_busy_time() -> None:
    gate = AdmissionControl(app, max_wait_s=2.0, max_inflight=512, min_inflight=2)
    for i in range(4):  # 4 requests of 0.1 s, one after the other
        gate._enter(i * 0.1)
        gate._leave((i + 1) * 0.1, i * 0.1)
    # 1.5 s idle: 0.4 busy seconds in the 2 s window, capacity 10/s (not 2/s)
    assert gate.busy_seconds(1.9, 2.0) == pytest.approx(0.4)
    assert gate.rate(1.9) == pytest.approx(10.0)


def test_a_burst_after_a_long_idle_spell_is_measured_on_its_own_busy_time() -> None:
    # Idle longer than the history kept: the window reaches back into the quiet spell, which
    # must not count as busy (16 completions over a whole window would read 6.7/s and shed
    # the second batch of a burst on a service doing 50/s).
    gate = AdmissionControl(app, max_wait_s=2.0, max_inflight=512)
    simulate(gate, 0.3, 20.0)
    for _ in range(CLIENTS):  # everyone leaves
        gate._leave(20.5, 20.2)
    restart = 20.5 + AdmissionControl.MAX_WINDOW_S + 10
    for _ in range(CLIENTS):
        gate._enter(restart)
    for client in range(CLIENTS):
        gate._leave(restart + 0.3 + client * SPREAD_S, restart)
        gate._enter(restart + 0.3 + client * SPREAD_S)
    now = restart + 0.32
    assert gate.busy_seconds(now) == pytest.approx(0.32)
    rate = gate.rate(now)
    assert rate is not None and rate > 40
    assert gate.estimated_wait(now) < 0.5
