// The page's modes, as tabs: one character, or a row. Arrows, Home and End move between them.

import { $ } from "./dom.js";

function selectMode(tab) {
  for (const each of document.querySelectorAll('[role="tab"]')) {
    const selected = each === tab;
    each.setAttribute("aria-selected", String(selected));
    each.tabIndex = selected ? 0 : -1; // one tab stop for the tabs; arrows move between them
    $(each.getAttribute("aria-controls")).hidden = !selected;
  }
}

function tabKeys(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const at = tabs.indexOf(event.currentTarget);
  const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  const tab = tabs[(next + tabs.length) % tabs.length];
  selectMode(tab);
  tab.focus();
}

export function mountModes() {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectMode(tab));
    tab.addEventListener("keydown", tabKeys);
  }
}
