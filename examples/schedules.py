"""A schedule every second on the embedded backend: three runs, one per slot.

python examples/schedules.py
"""

from __future__ import annotations

import tempfile
import time

import autoflow as af


@af.node
def stamp(slot: str) -> str:
    return f"ran for {slot}"


@af.workflow(name="every_second_demo")
def every_second(slot: str = ""):
    return stamp(slot)


if __name__ == "__main__":
    print(af.triggers.preview(cron="30 1 * * *", timezone="America/New_York", n=3))
    with tempfile.TemporaryDirectory() as home, af.Client(settings=af.Settings(home=home)) as client:
        schedule = client.schedules.create(every_second, cron="* * * * * *", slot_input="slot", overlap="allow_all")
        deadline = time.monotonic() + 30
        while len([r for r in client.runs(workflow="every_second_demo") if r.finished]) < 3:
            if time.monotonic() > deadline:
                raise SystemExit("no runs after 30 s")
            time.sleep(0.1)
        client.schedules.pause(schedule.id)
        for run in sorted(client.runs(workflow="every_second_demo"), key=lambda r: r.created_at):
            if run.finished:
                print(run.trigger_data["slot"], "->", client.result(run.id))
        print(client.schedules.get(schedule.id).fired, "slots fired")
