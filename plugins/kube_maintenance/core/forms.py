"""The trigger forms of the three operations, declared as fields, and what a run reads from them.

Airflow's UI form (FlexibleForm) marks a field required unless its JSON-schema type includes
"null", and then refuses to submit while a required field is empty. So every field whose empty
value means something ("no selector: all nodes") is nullable; fields with a real default keep a
plain type. Fields without a section land in the form's first, open section: that is where
``dry_run`` and ``ignore_window`` go, so a person sees them before anything else.

A manual run's form always opens with ``dry_run`` on. Scheduled runs get no form: they use the
registry's ``defaults`` for the operation (see ``run_conf``), which may turn ``dry_run`` off.
Kept cheap to import: no Airflow import at module level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SECTION_TARGET = "What to act on"
SECTION_PACE = "Pace and limits"
SECTION_SAFETY = "Safety"

# The JSON Schema dialect every field declares. Without one, jsonschema checks each schema against
# the 2020-12 metaschema (dynamic references) each time a value is validated: Airflow validates
# every Param of a scheduled DAG at each parse, and that check was a third of the parse time.
# Draft 7 has every keyword these forms use (type, items, minimum, maximum, enum) and is checked
# about five times faster.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


@dataclass(frozen=True)
class FormField:
    """One trigger-form field: its name, the JSON schema Airflow validates, and the words a person reads."""

    name: str
    title: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    section: str | None = None  # None: the form's first section (run mode)

    def param(self, default: Any) -> Any:
        from airflow.sdk import Param

        extra = {"section": self.section} if self.section else {}
        return Param(default, title=self.title, description=self.description, **{"$schema": SCHEMA_DIALECT}, **self.schema, **extra)


# The two fields every operation opens with.
DRY_RUN = FormField(
    "dry_run",
    "Dry run",
    "Plan and log every change as an audit line with outcome \"planned\"; change nothing. "
    "Always on when the form opens: turn it off only after reading a dry run's plan.",
    {"type": "boolean"},
)
IGNORE_WINDOW = FormField(
    "ignore_window",
    "Ignore the maintenance window",
    "Run now even outside the cluster's maintenance window (a dry run may always run).",
    {"type": "boolean"},
)


def optional_selector(name: str, title: str, description: str, example: str, section: str = SECTION_TARGET) -> FormField:
    """A label selector that may be left empty (meaning: no filter)."""
    return FormField(name, title, f"{description} Kubernetes label selector syntax, e.g. {example}.", {"type": ["null", "string"]}, section)


def optional_names(name: str, title: str, description: str, section: str = SECTION_TARGET) -> FormField:
    """A list of names that may be left empty; one per line in the form."""
    return FormField(name, title, f"{description} One per line.", {"type": ["null", "array"], "items": {"type": "string"}}, section)


def form_defaults(base: Mapping[str, Any], registry_defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the manual form opens with: the operation's base values, the registry's defaults over
    them, and ``dry_run`` on whatever the registry says (its defaults are for scheduled runs)."""
    values = dict(base)
    values.update({k: v for k, v in (registry_defaults or {}).items() if k in base})
    values["dry_run"] = True
    return values


def build_params(fields: tuple[FormField, ...], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG's ``params``, in form order (``dry_run`` first)."""
    missing = [f.name for f in fields if f.name not in defaults]
    if missing:
        raise ValueError(f"form fields without a default: {', '.join(missing)}")
    return {f.name: f.param(defaults[f.name]) for f in fields}


def _shown(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "(empty)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def params_doc(fields: tuple[FormField, ...], defaults: Mapping[str, Any], scheduled_defaults: Mapping[str, Any] | None) -> str:
    """A markdown table of the form for the DAG's docs: what each field does and its defaults."""
    rows = ["| field | section | form default | scheduled runs | what it does |", "|---|---|---|---|---|"]
    scheduled = {**defaults, **(scheduled_defaults or {})}
    for f in fields:
        description = f.description.replace("|", "\\|")
        rows.append(f"| `{f.name}` ({f.title}) | {f.section or 'Run'} | {_shown(defaults[f.name])} | {_shown(scheduled.get(f.name))} | {description} |")
    return "\n".join(rows)


def run_conf(context: Mapping[str, Any], registry_defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters a task acts on.

    A manual run acts on what its form (or API ``conf``) said. A scheduled run has no form: it
    acts on the registry's defaults for the operation, ``dry_run`` included, over the form's.
    """
    raw = dict(context.get("params") or {})
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", "")
    if str(getattr(run_type, "value", run_type) or "") == "scheduled":
        raw.update(registry_defaults or {})
    return raw
