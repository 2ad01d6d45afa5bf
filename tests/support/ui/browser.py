"""Drives ecs-xds's /ui in Debian's headless Chromium with Playwright, one step per line read
on stdin; answers `ok <step>` or `fail <step>: <why>` on stdout. The Rust test (tests/ui_e2e.rs)
changes the world between steps (a task in moto, a template Envoy rejects) and checks that the
page, never reloaded, shows it.

Steps (arguments separated by spaces):
  open                      load /ui once; every later step works on this same page
  services CLUSTER...       the Services view lists these clusters
  endpoints CLUSTER N       the Services view shows N endpoints for CLUSTER (polling, no reload)
  envoy NODE_ID             the Envoys view lists it; clicking it explains it
  graph FROM TO MISSING     the graph has the edge FROM -> TO and a red node MISSING
  nack NODE_ID TEXT         the Envoys view shows NODE_ID's NACK with TEXT in Envoy's message
  changes KIND              the Changes view has an entry of KIND (inventory, reload, push)
  errors                    no console error and no uncaught exception so far; the page was
                            loaded once
  quit
"""

import sys

from playwright.sync_api import sync_playwright

ADMIN, SHOTS = sys.argv[1], sys.argv[2]
WAIT_MS = 20000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def shot(page, name):
    page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def tab(page, name):
    page.click(f"#tabs button[data-tab={name}]")
    page.wait_for_selector(f"body[data-loaded={name}]", timeout=WAIT_MS)


def step_services(page, *clusters):
    tab(page, "services")
    for cluster in clusters:
        page.wait_for_selector(f'tr.service[data-cluster="{cluster}"]', timeout=WAIT_MS)
    shot(page, "services")


def step_endpoints(page, cluster, n):
    tab(page, "services")
    row = f'tr.service[data-cluster="{cluster}"] summary'
    page.wait_for_function(
        "([sel, n]) => { const s = document.querySelector(sel); return s && s.textContent === n + ' endpoints'; }",
        arg=[row, n], timeout=WAIT_MS)


def step_envoy(page, node_id):
    tab(page, "envoys")
    row = f'tr.envoy[data-node="{node_id}"]'
    page.wait_for_selector(row, timeout=WAIT_MS)
    shot(page, "envoys")
    page.click(row)
    page.wait_for_selector("#explain h2", timeout=WAIT_MS)
    text = page.inner_text("#explain")
    for expected in (node_id, "node type", "what it gets", "show its CSDS dump"):
        if expected not in text:
            raise AssertionError(f"the explanation lacks {expected!r}: {text}")
    page.click("text=show its CSDS dump")
    page.wait_for_function(
        "() => document.querySelector('#explain pre').textContent.includes('genericXdsConfigs')",
        timeout=WAIT_MS)
    shot(page, "explain")


def step_graph(page, source, target, missing):
    tab(page, "graph")
    # A straight edge has no height, which Playwright counts as hidden: attached is enough.
    edge = f'path.edge[data-from="{source}"][data-to="{target}"]'
    page.wait_for_selector(edge, state="attached", timeout=WAIT_MS)
    page.wait_for_selector(f'g.node.missing[data-id="{missing}"]', timeout=WAIT_MS)
    missing_edge = f'path.edge.missing[data-from="{source}"][data-to="{missing}"]'
    page.wait_for_selector(missing_edge, state="attached", timeout=WAIT_MS)
    shot(page, "graph")


def step_nack(page, node_id, *words):
    text = " ".join(words)
    tab(page, "envoys")
    page.wait_for_function(
        "([id, text]) => { const r = document.querySelector(`tr.envoy[data-node=\"${id}\"]`);"
        " return r && r.classList.contains('nack') && r.querySelector('.nack-message')"
        " && r.querySelector('.nack-message').textContent.includes(text); }",
        arg=[node_id, text], timeout=WAIT_MS)
    shot(page, "envoys-nack")


def step_changes(page, kind):
    tab(page, "changes")
    page.wait_for_selector(f'tr.change[data-kind="{kind}"]', timeout=WAIT_MS)
    shot(page, "changes")


def main():
    errors, loads = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("load", lambda: loads.append(1))
        steps = {
            "services": step_services, "endpoints": step_endpoints, "envoy": step_envoy,
            "graph": step_graph, "nack": step_nack, "changes": step_changes,
        }
        for line in sys.stdin:
            name, *args = line.split()
            try:
                if name == "quit":
                    print("ok quit", flush=True)
                    break
                if name == "open":
                    page.goto(f"{ADMIN}/ui")
                elif name == "errors":
                    if errors:
                        raise AssertionError(f"console errors: {errors}")
                    if len(loads) != 1:
                        raise AssertionError(f"the page was loaded {len(loads)} times")
                else:
                    steps[name](page, *args)
                print(f"ok {name}", flush=True)
            except Exception as e:  # the test reads the reason
                reason = str(e).replace("\n", " ")[:2000]
                print(f"fail {name}: {reason}", flush=True)
        browser.close()


main()
