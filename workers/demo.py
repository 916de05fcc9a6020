"""``make demo``: the pack's main job on the embedded default, with no API key and no server to start.

Starts the loopback OpenAI simulator (it is not the real API), then runs the ticket-triage
workflow (moderate → summarise → classify) through a real Celery worker on the in-memory broker,
with its run record in a SQLite file, and prints the run's summary. Everything lives in a
temporary home so the user's own integrations are never touched (or billed).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "ticket-triage.yaml"
TICKET = {
    "subject": "Printer on floor 3 shows error 49",
    "body": "Since this morning the HP printer near reception shows 'error 49' and prints nothing. "
            "We restarted it twice. Payroll must print cheques today.",
    "customer": "Acme Dental",
}


def main() -> int:
    home = tempfile.mkdtemp(prefix="openai-pack-demo-")
    os.environ["OPENAI_PACK_HOME"] = home
    os.environ.pop("OPENAI_PACK_BROKER_URL", None)
    os.environ.pop("OPENAI_PACK_STORE_URL", None)

    from actions.simulator import Simulator
    from integration.model import Integration
    from integration.store import IntegrationStore
    from workers import app as worker_app
    from workers.embedded import in_process_worker
    from workers.workflow import load_workflow

    worker_app.reconfigure()
    with Simulator(port=0) as sim:
        print(f"OpenAI API simulator (NOT the real API) on {sim.url}")
        IntegrationStore().add(Integration(name="simulator", base_url=sim.url, auth={"placement": "none"}),
                               make_default=True)
        workflow = load_workflow(EXAMPLE)
        print(f"workflow {workflow.name!r} from {EXAMPLE.relative_to(EXAMPLE.parents[2])}: "
              f"{' → '.join(s.id for s in workflow.steps)}")
        engine = worker_app.engine()
        with in_process_worker(concurrency=4):
            run_id, _ = engine.start_run(workflow, TICKET, trigger={"type": "manual", "source": "make demo"})
            header = engine.wait(run_id, timeout=120)
        record = engine.store.record(run_id) or {}
        print(f"run {run_id}: {record.get('status')} in {record['totals']['duration']}s "
              f"(broker {worker_app.settings.broker_url}, run store {worker_app.settings.store_url})")
        for step in record["steps"]:
            usage = step.get("usage") or {}
            print(f"  {step['id']:10} {step.get('action', ''):24} {step['status']:10} attempts={step.get('attempts')} "
                  f"tokens={usage.get('total_tokens', 0)}")
        totals = record["totals"]
        print(f"  totals: {totals['usage'].get('total_tokens', 0)} tokens, {totals['attempts']} API attempts; "
              f"simulator received {sim.calls} calls")
        print("output:")
        print(json.dumps(record.get("output"), indent=2, ensure_ascii=False))
        print(f"see this run in the web console: OPENAI_PACK_HOME={home} openai-pack console\n"
              f"  then open the sign-in link it prints, and http://127.0.0.1:8090/console/runs/{run_id}")
        ok = header is not None and header.get("status") == "succeeded"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
