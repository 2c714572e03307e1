"""Driving Airflow 3.3's React UI with Playwright: log in, open a DAG, fill and submit the trigger form.

Selectors, as the 3.3.2 UI renders them (read from its built assets and checked against the live UI):

- login page (``/auth/login``): inputs labelled "Username" and "Password", a "Sign in" button;
- DAG page (``/dags/<dag_id>``): the header's button with the accessible name "Trigger Dag" (text "Trigger");
- the trigger modal: ``role=dialog``; its submit button is the dialog's button named exactly "Trigger";
- a form field of param ``p`` (FlexibleForm): text inputs and textareas (string arrays, one item per
  line) have ``id=element_p``; booleans are Chakra switches (``[id="switch:element_p"]`` with a hidden
  ``input[name=element_p]`` checkbox); numbers are Chakra number inputs (``[id="number-input:element_p"]``
  with ``input[name=element_p]``); enum arrays are react-selects (``div#element_p``, a combobox
  input, "Remove <value>" chips and hidden ``input[name=element_p]`` per selected value);
- params with a ``section`` sit in accordion items that may be collapsed: they are opened first.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Mapping

from playwright.sync_api import Locator, Page, expect

from airflow_processes import AirflowApi

DEFAULT_TIMEOUT_MS = 20_000


class TriggerFormError(AssertionError):
    """The UI refused or failed to trigger the run."""


class AirflowUi:
    """One logged-in browser page against one Airflow."""

    def __init__(self, page: Page, base_url: str, api: AirflowApi, artifacts: Path) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.artifacts = artifacts
        self._snapshots = 0
        page.set_default_timeout(DEFAULT_TIMEOUT_MS)

    # ------------------------------------------------------------------------------------- login
    def login(self, username: str, password: str) -> None:
        """Through the real login page: any page redirects there, fill the form, "Sign in"."""
        page = self.page
        page.goto(f"{self.base_url}/")
        page.wait_for_url(re.compile(r"/auth/login"), timeout=DEFAULT_TIMEOUT_MS)
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        sign_in = page.get_by_role("button", name="Sign in")
        expect(sign_in).to_be_enabled()
        sign_in.click()
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=DEFAULT_TIMEOUT_MS)
        # The app shell: its navigation renders once the token cookie works.
        expect(page.get_by_role("button", name="Browse")).to_be_visible()

    # ---------------------------------------------------------------------------------------- DAG
    def open_dag(self, dag_id: str) -> None:
        self.page.goto(f"{self.base_url}/dags/{dag_id}")
        expect(self.page.get_by_role("heading", name=dag_id).first).to_be_visible()

    def trigger_button(self) -> Locator:
        return self.page.get_by_role("button", name="Trigger Dag")

    def open_trigger_form(self) -> Locator:
        """Click the DAG page's Trigger button; return the modal once its params have rendered."""
        self.trigger_button().click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        # The params arrive with the DAG's details: wait for the first field of the form.
        expect(dialog.locator('[name^="element_"], [id^="element_"]').first).to_be_attached()
        self.settle()
        return dialog

    def dialog(self) -> Locator:
        return self.page.get_by_role("dialog")

    def submit_button(self) -> Locator:
        return self.dialog().get_by_role("button", name="Trigger", exact=True)

    def settle(self, ms: int = 600) -> None:
        """Let react-hook-form's validation effects run (the submit button follows them)."""
        self.page.wait_for_timeout(ms)

    def trigger_enabled(self) -> bool:
        self.settle()
        return self.submit_button().is_enabled()

    # ------------------------------------------------------------------------------------ fields
    def _open_sections_holding(self, selector: str) -> Locator:
        """Expand every collapsed accordion item (form section) holding ``selector``; return its locator."""
        dialog = self.dialog()
        items = dialog.locator('[data-scope="accordion"][data-part="item"]').filter(has=self.page.locator(selector))
        for i in range(items.count()):
            # The item's own trigger comes before its content, so before any nested item's trigger.
            trigger = items.nth(i).locator('[data-part="item-trigger"]').first
            if trigger.count() and trigger.get_attribute("aria-expanded") == "false":
                trigger.click()
        target = dialog.locator(selector)
        expect(target).to_be_visible()
        return target

    def field_kind(self, name: str) -> str:
        dialog = self.dialog()
        if dialog.locator(f'[id="switch:element_{name}"]').count():
            return "switch"
        if dialog.locator(f'[id="number-input:element_{name}"]').count():
            return "number"
        element = dialog.locator(f'[id="element_{name}"]')
        if not element.count():
            raise TriggerFormError(f"the trigger form has no field for param {name!r}")
        tag = element.evaluate("e => e.tagName")
        if tag == "TEXTAREA":
            return "lines"
        if tag == "INPUT":
            return "text"
        if element.locator('[role="combobox"]').count():
            return "multiselect"
        raise TriggerFormError(f"param {name!r}: unknown field ({tag})")

    def set_field(self, name: str, value: Any) -> None:
        """Fill one field as a user would; ``value`` as the param's JSON value (list for arrays)."""
        kind = self.field_kind(name)
        dialog = self.dialog()
        if kind == "switch":
            root = self._open_sections_holding(f'[id="switch:element_{name}"]')
            box = dialog.locator(f'input[name="element_{name}"]')
            if box.is_checked() != bool(value):
                root.click()
            expect(box).to_be_checked(checked=bool(value))
        elif kind == "number":
            box = self._open_sections_holding(f'input[name="element_{name}"]')
            box.fill("" if value is None else str(value))
            box.press("Tab")
        elif kind in ("lines", "text"):
            box = self._open_sections_holding(f'[id="element_{name}"]')
            if kind == "lines" and isinstance(value, (list, tuple)):
                value = "\n".join(value)
            box.fill("" if value is None else str(value))
            box.press("Tab")
        else:
            self._set_multiselect(name, list(value))

    def _set_multiselect(self, name: str, values: list[str]) -> None:
        root = self._open_sections_holding(f'[id="element_{name}"]')
        for current in self.selected_values(name):
            if current not in values:
                root.get_by_label(f"Remove {current}", exact=True).click()
        for wanted in values:
            if wanted not in self.selected_values(name):
                combo = root.get_by_role("combobox")
                combo.click()
                combo.fill(wanted)
                self.page.get_by_role("option", name=wanted, exact=True).click()
        selected = self.selected_values(name)
        if selected != values:
            raise TriggerFormError(f"multi-select {name}: wanted {values}, the form holds {selected}")

    def selected_values(self, name: str) -> list[str]:
        """The values a multi-select holds (react-select keeps one hidden input per value)."""
        return [i.get_attribute("value") or "" for i in self.dialog().locator(f'input[type="hidden"][name="element_{name}"]').all()]

    def field_value(self, name: str) -> Any:
        """What a field holds now, as the form shows it (a list for arrays)."""
        kind = self.field_kind(name)
        dialog = self.dialog()
        if kind == "multiselect":
            return self.selected_values(name)
        if kind == "switch":
            return dialog.locator(f'input[name="element_{name}"]').is_checked()
        if kind == "number":
            return dialog.locator(f'input[name="element_{name}"]').input_value()
        value = dialog.locator(f'[id="element_{name}"]').input_value()
        return [line for line in value.splitlines() if line.strip()] if kind == "lines" else value

    def fill(self, fields: Mapping[str, Any]) -> None:
        for name, value in fields.items():
            self.set_field(name, value)
        self.settle()

    # ------------------------------------------------------------------------------------ submit
    def snapshot(self, label: str) -> Path:
        """A screenshot and the HTML of the page (the form when it is open), for post-mortems."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._snapshots += 1
        stem = self.artifacts / f"{self._snapshots:02d}-{label}"
        try:
            self.page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
            stem.with_suffix(".html").write_text(self.page.content())
        except Exception as exc:  # noqa: BLE001 - a post-mortem aid must not hide the real failure
            stem.with_suffix(".txt").write_text(f"snapshot failed: {exc!r}")
        return stem

    def submit(self, dag_id: str, timeout: float = 30.0) -> str:
        """Click the modal's Trigger button; return the new run's id (the DAG's newest run, by REST)."""
        before = {r["dag_run_id"] for r in self.api.dag_runs(dag_id)}
        self.snapshot(f"{dag_id}-form")
        button = self.submit_button()
        if not button.is_enabled():
            raise TriggerFormError(f"{dag_id}: the trigger form's Trigger button is disabled; {self.form_problems()}")
        button.click()
        clicked = time.monotonic()
        deadline = clicked + timeout
        while True:
            new = [r for r in self.api.dag_runs(dag_id) if r["dag_run_id"] not in before]
            if new:
                break
            problems = self.form_problems()
            # Still no run a few seconds after the click, and the form shows an error: refused.
            if time.monotonic() - clicked > 3 and self.dialog().locator('[role="alert"]').filter(has_text=re.compile(r"\S")).count():
                self.snapshot(f"{dag_id}-refused")
                raise TriggerFormError(f"{dag_id}: the UI refused to trigger; {problems}")
            if time.monotonic() > deadline:
                self.snapshot(f"{dag_id}-no-run")
                raise TriggerFormError(f"{dag_id}: no new run {timeout:.0f}s after clicking Trigger; {problems}")
            time.sleep(0.5)
        expect(self.dialog()).to_be_hidden()  # the modal closes on success
        return new[0]["dag_run_id"]

    def form_problems(self) -> str:
        """What the open form shows as wrong: error texts and alerts, invalid fields, and required
        fields left empty (Airflow's form disables Trigger for those without saying why)."""
        dialog = self.dialog()
        if not dialog.count():
            return "(no dialog open)"
        texts = [t.strip() for t in dialog.locator('[data-part="error-text"], [role="alert"]').all_inner_texts() if t.strip()]
        invalid = dialog.locator('[data-invalid], [aria-invalid="true"]').evaluate_all(
            "els => els.map(e => e.getAttribute('name') || e.id).filter(Boolean)"
        )
        empty_required = dialog.locator('input[name^="element_"][required], textarea[name^="element_"][required]').evaluate_all(
            "els => els.filter(e => e.type !== 'hidden' && e.type !== 'checkbox' && e.value === '').map(e => e.name.replace(/^element_/, ''))"
        )
        return (
            f"errors shown: {texts or 'none'}; invalid fields: {sorted(set(invalid)) or 'none'}; "
            f"required fields left empty: {sorted(set(empty_required)) or 'none'}"
        )

    def trigger(self, dag_id: str, fields: Mapping[str, Any] | None = None) -> str:
        """Open the DAG, open its trigger form, fill ``fields``, submit; return the run id."""
        self.open_dag(dag_id)
        self.open_trigger_form()
        if fields:
            self.fill(fields)
        return self.submit(dag_id)

