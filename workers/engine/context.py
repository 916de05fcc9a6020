"""What templates see: ``inputs``, ``steps`` (status, output, error), ``vars``, ``run``; ``item``, ``index``.

Steps are read lazily, one by one as templates name them; a run's definition, inputs and trigger
and its finished steps are cached per process (none of them changes), so a step's cost does not
grow with the length of the workflow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from workers.state.runs import FINISHED, RunStore
from workers.workflow import Workflow, workflow_from_dict

__all__ = ["TemplateContext"]


class TemplateContext:
    """Per-process caches of immutable run data, and the template context built from them."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._workflows: dict[str, Workflow] = {}
        self._fixed: dict[str, tuple[Any, Any]] = {}
        self._steps_seen: dict[tuple[str, str], dict[str, Any]] = {}

    def known(self, run_id: str) -> bool:
        """This process has the run's immutable parts cached (one round trip less per step)."""
        return run_id in self._workflows and run_id in self._fixed

    def remember(self, run_id: str, header: dict[str, Any]) -> None:
        if len(self._workflows) > 512:
            self._workflows.clear()
        if len(self._fixed) > 256:
            self._fixed.clear()
        self._workflows[run_id] = workflow_from_dict(header["definition"] or {})
        self._fixed[run_id] = (header["inputs"] or {}, header["trigger"])

    def workflow(self, run_id: str) -> Workflow:
        cached = self._workflows.get(run_id)
        if cached is None:
            cached = workflow_from_dict(self.store.definition(run_id))
            if len(self._workflows) > 512:
                self._workflows.clear()
            self._workflows[run_id] = cached
        return cached

    def forget(self, run_id: str) -> None:
        """The run ended: drop its cached parts."""
        self._workflows.pop(run_id, None)
        self._fixed.pop(run_id, None)
        for key in [k for k in self._steps_seen if k[0] == run_id]:
            self._steps_seen.pop(key, None)

    def build(self, run_id: str, workflow: Workflow, *, item: Any = None, index: int | None = None,
              has_item: bool = False, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """``variables``: the run's published variables when the caller has just read them (a fan-out item)."""
        fixed = self._fixed.get(run_id)
        if fixed is None:
            header = self.store.fields(run_id, ["inputs", "trigger"])
            fixed = (header["inputs"] or {}, header["trigger"])
            if len(self._fixed) > 256:
                self._fixed.clear()
            self._fixed[run_id] = fixed
        if variables is None:
            variables = self.store.variables(run_id)
        context: dict[str, Any] = {
            "inputs": fixed[0], "steps": _LazySteps(self, run_id), "vars": variables,
            "run": {"id": run_id, "workflow": workflow.name, "trigger": fixed[1]},
        }
        if has_item:
            context["item"], context["index"] = item, index
        return context

    def step_view(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        """One step as templates see it; finished steps are cached."""
        key = (run_id, step_id)
        cached = self._steps_seen.get(key)
        if cached is not None:
            return cached
        record = self.store.step(run_id, step_id)
        if record is None:
            return None
        if record.get("items") is not None and record.get("status") in FINISHED:
            # A fan-out's output is its items' outputs in order, read only when a template asks for it.
            output: Any = self.store.item_outputs(run_id, step_id, int(record["items"].get("total") or 0))
        else:
            found, full = self.store.full_output(run_id, step_id)
            output = full if found else record.get("output")
        view = {"status": record.get("status"), "error": record.get("error"), "usage": record.get("usage"),
                "output": output}
        if record.get("status") in FINISHED:
            if len(self._steps_seen) > 1024:
                self._steps_seen.clear()
            self._steps_seen[key] = view
        return view


class _LazySteps(Mapping[str, Any]):
    """``steps`` in templates: each step is fetched when a template names it."""

    def __init__(self, context: TemplateContext, run_id: str) -> None:
        self._context, self._run_id = context, run_id
        self._seen: dict[str, Any] = {}

    def __getitem__(self, step_id: str) -> Any:
        if step_id not in self._seen:
            view = self._context.step_view(self._run_id, step_id)
            if view is None:
                raise KeyError(step_id)
            self._seen[step_id] = view
        return self._seen[step_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._context.store.steps(self._run_id))

    def __len__(self) -> int:
        return len(self._context.store.steps(self._run_id))
