"""The workflow language: definitions loaded from YAML/JSON, checked before any run, rendered in a sandbox.

Modules, in the order they depend on each other:

- ``errors``: ``WorkflowError`` (a file is wrong: names the file, step and field) and ``TemplateError``
  (a template failed at run time: names the step and the expression).
- ``templates``: the Jinja2 sandbox with its resource caps, ``render`` and ``evaluate``.
- ``model``: ``Workflow``, ``Step``, ``Transition``, ``WebhookConfig`` and the routing rules.
- ``checks``: load-time checks JSON Schema cannot express (template names, literal inputs, integrations).
- ``loader``: reading text within bounds, the schema's errors in words, building the model.

``workflow.schema.json`` is the file format; ``docs/workflows.md`` the user's guide.
"""

from __future__ import annotations

from workers.workflow.errors import TemplateError, WorkflowError
from workers.workflow.loader import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_STEPS,
    MAX_VALUES,
    YAMLLimitError,
    load_workflow,
    load_workflow_dir,
    load_yaml,
    parse_workflow,
    workflow_from_dict,
)
from workers.workflow.model import Step, Transition, WebhookConfig, Workflow
from workers.workflow.templates import (
    CONTEXT_NAMES,
    ITEM_NAMES,
    MAX_LOOP_ITERATIONS,
    MAX_RENDER_SECONDS,
    MAX_SIZE,
    evaluate,
    render,
)

__all__ = ["CONTEXT_NAMES", "ITEM_NAMES", "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_LOOP_ITERATIONS", "MAX_RENDER_SECONDS",
           "MAX_SIZE", "MAX_STEPS", "MAX_VALUES", "Step", "TemplateError", "Transition", "WebhookConfig", "Workflow",
           "WorkflowError", "YAMLLimitError", "evaluate", "load_workflow", "load_workflow_dir", "load_yaml",
           "parse_workflow", "render", "workflow_from_dict"]
