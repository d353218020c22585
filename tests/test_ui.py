"""The Dagster UI serves the project: `dagster dev -w workspace.yaml` loads the code location,
its GraphQL API lists exactly the assets and checks of `pipelines.definitions.defs`, the global
asset lineage page draws every layer (ingest -> conform -> identity -> marts), and an asset's
Checks tab lists its checks.

Runs the system Chromium through Playwright (`make test` installs it via `make browser`). The
asset-graph screenshot is saved under the test's tmp_path and copied to /tmp/ui_check.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.definitions import defs
from tests.ui_helpers import chromium, dagster_dev, graphql

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

# The medallion layers every deployment must show: group name -> asset key prefix.
# group -> the key prefixes of its assets (the marts step also writes the disclosure
# registers; one multi-asset cannot span groups and still be selected by group).
LAYERS = {"ingest": ("bronze", "quarantine"), "conform": ("silver",),
          "identity": ("identity", "models"), "marts": ("gold", "disclosure")}
CHECKED_ASSET = ("silver", "person_record")
REVIEW_SCREENSHOT = Path("/tmp/ui_check.png")

ASSET_NODES_QUERY = """{ assetNodes { assetKey { path } groupName
  assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }"""

# Before the first page load: skip the one-off "Join the Dagster community" dialog (it covers
# the graph) and lay the graph out top-down, so the layers fit the window's width.
INIT_SCRIPT = """
window.localStorage.setItem('communityNux', JSON.stringify('1'));
window.localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'));
"""

# Labels drawn in the graph viewport (group titles and asset names); long names are
# middle-truncated ("dsa-hous…-research"), so a label matches a name by its two ends.
GRAPH_LABELS_JS = """() => {
  const vp = document.querySelector('[data-svg-viewport]');
  if (!vp) return [];
  return Array.from(vp.querySelectorAll('foreignObject div'))
    .filter(d => d.children.length === 0)
    .map(d => d.textContent.trim()).filter(Boolean);
}"""
GRAPH_SHOWS_JS = """([names, groups]) => {
  const labels = (%s)();
  const shown = n => labels.some(l => l === n || (l.includes('\u2026')
      && n.startsWith(l.split('\u2026')[0]) && n.endsWith(l.split('\u2026').pop())));
  return groups.every(g => labels.includes(g)) && names.every(shown);
}""" % GRAPH_LABELS_JS


def expected_graph() -> tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], set[str]]]:
    """Asset key -> group, and asset key -> check names, from the code location itself."""
    graph = defs.get_repository_def().asset_graph
    groups = {tuple(k.path): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    checks: dict[tuple[str, ...], set[str]] = {k: set() for k in groups}
    for check in graph.asset_check_keys:
        checks[tuple(check.asset_key.path)].add(check.name)
    return groups, checks


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """`dagster dev` plus a Chromium page on it, shared by the tests of this module; fails on
    teardown if any process outlived the shutdown."""
    workdir = tmp_path_factory.mktemp("ui")
    with dagster_dev(workdir) as server:
        with chromium(workdir, init_script=INIT_SCRIPT) as browser:
            yield server, browser.page
        assert not browser.leftovers, f"Chromium processes outlived the test: {browser.leftovers}"
    assert not server.leftovers, f"dagster processes outlived the test: {server.leftovers}"


def test_graphql_lists_the_code_locations_assets_and_checks(ui):
    server, _ = ui
    groups, checks = expected_graph()
    nodes = graphql(server.base, ASSET_NODES_QUERY)["assetNodes"]
    served_groups = {tuple(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    served_checks = {tuple(n["assetKey"]["path"]): {c["name"] for c in
                                                     n["assetChecksOrError"].get("checks", [])}
                     for n in nodes}
    assert sorted(served_groups) == sorted(groups)
    assert served_groups == groups
    assert served_checks == checks


def test_asset_graph_shows_every_layer(ui, tmp_path):
    server, page = ui
    groups, _ = expected_graph()
    for group, prefix in LAYERS.items():
        members = [k for k, g in groups.items() if g == group]
        assert members, f"no assets in the {group} group"
        assert all(k[0] in prefix for k in members if len(k) > 1), (group, members)

    page.goto(f"{server.base}/asset-groups")  # "Global asset lineage"
    page.get_by_text("Global asset lineage").first.wait_for()
    # Groups start collapsed; wait until they are drawn, then "Expand all groups" (⌥E).
    page.wait_for_function(GRAPH_SHOWS_JS, arg=[[], sorted(LAYERS)], timeout=60_000)
    for attempt in range(3):
        page.keyboard.press("Alt+e")
        try:
            page.wait_for_url("**expanded=*", timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                raise
    names = sorted({k[-1] for k in groups})
    try:
        page.wait_for_function(GRAPH_SHOWS_JS, arg=[names, sorted(set(groups.values()))],
                               timeout=60_000)
    finally:
        shot = tmp_path / "asset_graph.png"
        page.screenshot(path=str(shot))
        shutil.copyfile(shot, REVIEW_SCREENSHOT)
    labels = page.evaluate(GRAPH_LABELS_JS)
    for group in LAYERS:
        assert group in labels, (group, labels)


def test_asset_checks_are_listed_in_the_ui(ui, tmp_path):
    server, page = ui
    _, checks = expected_graph()
    expected = checks[CHECKED_ASSET]
    assert {"contract", "rows_reconcile"} <= expected

    page.goto(f"{server.base}/assets/{'/'.join(CHECKED_ASSET)}?view=checks")
    page.get_by_text(f"Checks ({len(expected)})", exact=True).wait_for()
    for name in sorted(expected):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(tmp_path / "asset_checks.png"))
