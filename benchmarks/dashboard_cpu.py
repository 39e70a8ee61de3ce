"""The overview page's main-thread cost in a browser, with a fleet of simulated units sending metrics.

    python benchmarks/dashboard_cpu.py [--units 2000] [--rows 500] [--window 30] [--settle 20]

Starts everything itself in a temporary directory: `fleet up` (embedded broker, SQLite) on free ports, the units
inserted in bulk with ONE shared secret hashed once (fast set-up, benchmark only), `fleet simulate` with the
default intervals (heartbeat 30 s, metrics 10 s, a log batch per minute), and headless Chromium
(/usr/bin/chromium, Playwright) signed in as an operator on the overview with ROWS rows per page. Once the page has
settled it samples Chrome's `Performance.getMetrics` over a CDP session at the start and the end of a window and
prints:

- the main thread's busy share of one core (`TaskDuration`) and its parts (`ScriptDuration`, `LayoutDuration`,
  `RecalcStyleDuration`);
- the events the page received per second on its `GET /api/events` stream (counted by a wrapper around
  `fetch` installed before the page's own scripts, the same before and after any change of the page);
- the service's CPU share of one core over the same window.

Target (docs/performance.md, Dashboard): < 20 % of a core at 2,000 units and 500 rows per page.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (  # noqa: E402
    ADMIN_TOKEN,
    Proc,
    database,
    free_port,
    insert_units,
    start_fleet,
    wait_http,
    workdir,
    write_secrets_cache,
)

from fleet_service.cli.simulated_units import database_target  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from simulator.enroll import unit_ids  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "bench-operator", "bench-operator-pass-1"

# Counts the Server-Sent Events that reach the page (`data:` lines of /api/events), without changing them.
COUNT_EVENTS = """
(() => {
  window.__benchEvents = 0;
  window.__benchStreams = [];
  const realFetch = window.fetch;
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    const url = typeof input === "string" ? input : input.url;
    if (!url.includes("/api/events") || !response.body) return response;
    window.__benchStreams.push(url);
    const decoder = new TextDecoder();
    let tail = "";
    const counter = new TransformStream({
      transform(chunk, controller) {
        const text = tail + decoder.decode(chunk, { stream: true });
        window.__benchEvents += (text.match(/(^|\\n)data:/g) || []).length;
        tail = text.slice(-6).includes("\\n") ? text.slice(text.lastIndexOf("\\n")) : "";
        if (tail.startsWith("\\ndata:")) tail = "";
        controller.enqueue(chunk);
      },
    });
    return new Response(response.body.pipeThrough(counter),
      { status: response.status, statusText: response.statusText, headers: response.headers });
  };
})();
"""

METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def online(api: httpx.Client) -> int:
    try:
        return api.get("/api/devices", params={"status": "online", "limit": 1}).json()["total"]
    except httpx.HTTPError:
        return -1


def perf(cdp) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure_page(base: str, rows: int, settle: float, window: float, service: Proc) -> dict[str, float]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(COUNT_EVENTS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/#/?size={rows}")
            page.fill("#login-user", USER)
            page.fill("#login-password", PASSWORD)
            page.click(".login-form button[type=submit]")
            expect(page.locator("#units-body tr")).to_have_count(rows, timeout=60_000)
            expect(page.locator("#stream-state")).to_have_text("live", timeout=30_000)
            time.sleep(settle)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            start, events0, cpu0, t0 = perf(cdp), page.evaluate("window.__benchEvents"), service.cpu_seconds(), None
            t0 = time.monotonic()
            time.sleep(window)
            end, events1, cpu1 = perf(cdp), page.evaluate("window.__benchEvents"), service.cpu_seconds()
            elapsed = time.monotonic() - t0
            streams = page.evaluate("window.__benchStreams")
            if errors:
                print(f"dashboard_cpu: JavaScript errors on the page: {errors}", flush=True)
        finally:
            browser.close()
    out = {name: (end.get(name, 0.0) - start.get(name, 0.0)) / elapsed for name in METRICS}
    out["events_per_s"] = (events1 - events0) / elapsed
    out["service_cpu"] = (cpu1 - cpu0) / elapsed
    out["window_s"] = elapsed
    out["stream_url_chars"] = float(len(streams[-1])) if streams else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000, help="simulated units (default 2000)")
    parser.add_argument("--rows", type=int, default=500, choices=[50, 100, 250, 500], help="rows per page")
    parser.add_argument("--window", type=float, default=30.0, help="measured window in seconds (default 30)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after the page is live (default 20)")
    parser.add_argument("--connect-rate", type=float, default=60.0, help="unit connections per second")
    args = parser.parse_args()
    ids = unit_ids("bench", args.units)

    with workdir("dashboard-cpu-") as tmp, database("sqlite", tmp) as url:
        secret = insert_units(url, ids)
        write_secrets_cache(tmp / "units.json", database_target(make_engine(url)), ids, secret)
        http_port = free_port()
        service, _, mqtt_port = start_fleet(True, tmp, url, http_port, secret, ids)
        sim = None
        try:
            base = f"http://127.0.0.1:{http_port}"
            wait_http(base)
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
            r = api.post("/api/users", json={"username": USER, "password": PASSWORD, "role": "operator"})
            if r.status_code != 201:
                raise SystemExit(f"could not create the user: {r.status_code} {r.text[:200]}")
            sim = Proc(
                "simulate",
                [
                    "--log-level",
                    "WARNING",
                    "simulate",
                    "--devices",
                    str(args.units),
                    "--prefix",
                    "bench",
                    "--broker-url",
                    f"mqtt://127.0.0.1:{mqtt_port}",
                    "--database-url",
                    url,
                    "--secrets-file",
                    str(tmp / "units.json"),
                    "--connect-rate",
                    str(args.connect_rate),
                ],
                tmp,
            )
            deadline = time.monotonic() + args.units / args.connect_rate * 3 + 120
            count = 0
            while count < args.units and time.monotonic() < deadline:
                time.sleep(2)
                if not sim.alive() or not service.alive():
                    raise SystemExit(f"a process died:\n{sim.tail()}\n{service.tail()}")
                count = max(count, online(api))
            print(f"dashboard_cpu: {count}/{args.units} units online", flush=True)
            time.sleep(12)  # one full metrics interval after the connect wave
            r = measure_page(base, args.rows, args.settle, args.window, service)
            print(
                f"\ndashboard_cpu results ({args.units} units, {args.rows} rows per page, window {r['window_s']:.0f}s, "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
            )
            print(
                f"  page main thread busy: {100 * r['TaskDuration']:.1f}% of one core "
                f"(script {100 * r['ScriptDuration']:.1f}%, layout {100 * r['LayoutDuration']:.1f}%, "
                f"style {100 * r['RecalcStyleDuration']:.1f}%)"
            )
            print(
                f"  events received by the page: {r['events_per_s']:.1f}/s "
                f"(stream URL {r['stream_url_chars']:.0f} characters)"
            )
            print(f"  service CPU: {100 * r['service_cpu']:.0f}% of one core")
            ok = r["TaskDuration"] < 0.20
            print(f"  target page main thread < 20% of a core: {'met' if ok else 'MISSED'}")
        finally:
            if sim is not None:
                sim.stop(timeout=120)
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
