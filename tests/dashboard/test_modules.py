"""The dashboard's pure helpers (time and size formatting, config checks, counter rates, error wording), run as
ES modules in the browser that serves them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def run(open_page):
    page = open_page(role=None)

    def evaluate(module: str, body: str):
        return page.evaluate(f"async () => {{ const m = await import('/{module}'); {body} }}")

    return evaluate


def test_time_and_size_formatting(run):
    assert run(
        "format.js",
        """
        const now = Date.parse("2026-01-01T12:00:00Z");
        return [m.ago(null, now), m.ago(now - 500, now), m.ago(now - 12_000, now), m.ago(now - 5 * 60_000, now),
                m.ago(now - 3 * 3600_000, now), m.ago("2025-12-30T12:00:00Z", now), m.ago(now + 5000, now)];
    """,
    ) == ["never", "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago", "just now"]
    durations = run(
        "format.js",
        "return [m.duration(0), m.duration(59), m.duration(61),"
        " m.duration(3 * 86400 + 4 * 3600 + 5), m.duration(null)];",
    )
    assert durations == ["0 s", "59 s", "1 min 1 s", "3 d 4 h", "–"]
    assert run(
        "format.js",
        "return [m.bytes(999), m.bytes(1500), m.bytes(408_000_000_000), m.rate(2_500_000),"
        " m.percent(23.6), m.celsius(null), m.count(12345)];",
    ) == ["999 B", "1.5 KB", "408 GB", "2.5 MB/s", "24 %", "–", "12,345"]
    assert run("format.js", "return [m.toMs(5), m.toMs('1970-01-01T00:00:01.500Z'), m.toMs('junk'), m.toMs('')];") == [
        5,
        1500,
        None,
        None,
    ]
    levels = run(
        "format.js", "return [m.level(50, 75, 90), m.level(80, 75, 90), m.level(95, 75, 90), m.level(null, 1, 2)];"
    )
    assert levels == ["ok", "warn", "crit", "none"]


def test_times_name_their_zone_and_log_times_their_date_when_not_today(run):
    assert run(
        "format.js",
        """
        m.useZone("utc");
        const now = Date.parse("2026-01-01T12:00:00Z");
        const out = [m.dateTime(now), m.clock(now), m.logTime(now - 3600_000, now), m.logTime(now - 13 * 3600_000, now),
                     m.zoneLabel(now), m.timeTick(now, 3600_000)];
        m.useZone("local");
        return out;
    """,
    ) == ["2026-01-01 12:00:00 UTC", "12:00:00", "11:00:00", "2025-12-31 23:00:00", "UTC", "12:00"]


def test_config_checks_say_what_is_wrong(run):
    schema = (
        "const s = {video_bitrate_kbps: {type: 'integer', help: 'video bitrate', minimum: 100, maximum: 100000},"
        " resolution: {type: 'string', help: 'output resolution', choices: ['720p', '1080p']},"
        " cameras: {type: 'array', help: 'camera names'}, recording_enabled: {type: 'boolean', help: 'record'}};"
    )
    results = run(
        "views/unit_config.js",
        schema
        + """
        return ['{"a": 1,}', '', '"text"', 'null', '{"video_bitrate_kbps": 50}', '{"video_bitrate_kbps": 1.5}',
                '{"resolution": "4k"}', '{"cameras": ["a", 2]}', '{"recording_enabled": "yes"}',
                '{"video_bitrate_kbps": 4000, "unknown": [1, {"x": null}]}']
               .map((t) => m.parseConfig(t, s));
    """,
    )
    errors = [r.get("error") for r in results]
    assert errors[0].startswith("Not valid JSON")
    assert errors[1] == "The config is empty; write a JSON object such as {}."
    assert errors[2] == "The config must be a JSON object ({ ... }), not a string."
    assert errors[3] == "The config must be a JSON object ({ ... }), not null."
    assert errors[4] == "Not allowed: video_bitrate_kbps must be at least 100, got 50."
    assert errors[5] == "Not allowed: video_bitrate_kbps must be an integer (video bitrate), got 1.5."
    assert errors[6] == 'Not allowed: resolution must be one of 720p, 1080p, got "4k".'
    assert errors[7].startswith("Not allowed: cameras must be a list")
    assert errors[8].startswith("Not allowed: recording_enabled must be true or false")
    assert errors[9] is None and results[9]["value"]["video_bitrate_kbps"] == 4000
    big = run("views/unit_config.js", "return m.parseConfig(JSON.stringify({blob: 'x'.repeat(70000)}), {});")
    assert big["error"].endswith("at most 65536 are allowed.")


def test_network_rates_from_counters(run):
    points = run(
        "views/unit_metrics.js",
        """
        return m.withRates([{ts: 0, net_rx_bytes: 1000, net_tx_bytes: 0},
                            {ts: 10_000, net_rx_bytes: 6000, net_tx_bytes: 500},
                            {ts: 20_000, net_rx_bytes: 100, net_tx_bytes: 900}, {ts: 30_000, net_rx_bytes: null}])
          .map((p) => [p.rx_rate, p.tx_rate]);
    """,
    )
    assert points == [[None, None], [500, 50], [None, 40], [None, None]]  # a counter going back (reboot) is a gap


def test_api_errors_read_as_sentences(run):
    messages = run(
        "api.js",
        """
        const hdr = new Headers({'Retry-After': '30'});
        return [m.describeError(422, {detail: 'level must be one of debug, info'}),
                m.describeError(422, {detail: [{loc: ['body', 'ref'], msg: 'field required'}]}),
                m.describeError(403, {detail: 'this action needs the operator role'}),
                m.describeError(412, {detail: 'the desired config is at version 4, not 3'}),
                m.describeError(429, {detail: 'too many failed logins; try again later'}, hdr),
                m.describeError(502, 'Bad Gateway'),
                m.describeError(401, {detail: 'missing or invalid credentials'})];
    """,
    )
    assert messages == [
        "Invalid input: level must be one of debug, info.",
        "Invalid input: ref: field required.",
        "Not allowed: this action needs the operator role.",
        "Someone else changed this first (the desired config is at version 4, not 3). Reload and try again.",
        "too many failed logins; try again later — try again in 30 s.",
        "The server failed (HTTP 502): Bad Gateway.",
        "You are not signed in (or your session has ended). Please sign in again.",
    ]


def test_the_browser_checks_tags_with_the_rule_of_protocol_tags(run):
    from protocol.tags import TAG_PATTERN, TAG_RULE, is_tag

    assert run("tags.js", "return [m.TAG_PATTERN, m.TAG_RULE];") == [TAG_PATTERN, TAG_RULE]
    samples = ["site_1", "a", "x" * 64, "x" * 65, "-lead", "with space", "ü", "k=v:1.2", ""]
    verdicts = run("tags.js", f"return {samples!r}.map((t) => m.tagProblem(t) === null);")
    assert verdicts == [is_tag(t) for t in samples]
    assert run("tags.js", "return m.splitTags(' a, b  c,,d ');") == ["a", "b", "c", "d"]


def test_asciicast_parsing(run):
    parsed = run(
        "cast_player.js",
        """
        const text = [JSON.stringify({version: 2, width: 80, height: 24, idle_time_limit: 2}),
          '[0.5, "o", "a"]', '[10.5, "o", "b"]', '[11.0, "r", "100x30"]', ""].join("\\n");
        const c = m.parseCast(text);
        return [c.header.width, c.events, c.duration, m.parseSize("100x30"), m.parseSize("x")];
    """,
    )
    # the 10 s pause is cut to the header's idle_time_limit
    assert parsed == [80, [[0.5, "o", "a"], [2.5, "o", "b"], [3.0, "r", "100x30"]], 3.0, [100, 30], None]
    errors = run(
        "cast_player.js",
        """
        const bad = ["", '{"version": 1}', '{"version": 2}\\n[1, "o"]', '{"version": 2}\\nnope'];
        return bad.map((t) => { try { m.parseCast(t); return "parsed"; } catch (e) { return e.message; } });
    """,
    )
    assert errors == [
        "the recording is empty",
        "not an asciicast v2 file (version 1)",
        "line 2 is not an event [time, code, data]",
        "line 2 is not JSON",
    ]


def test_terminal_end_wording(run):
    assert run(
        "views/terminal.js",
        """
        return [m.endText({type: "exit", reason: "exited", status: 3}, 1000, "", false),
                m.endText(null, 4410, "remote shell is disabled on this unit", false),
                m.endText({reason: "idle", message: "idle for 900 s"}, 1000, "", false),
                m.endText(null, 1000, "", true),
                m.endText(null, 1006, "", false)];
    """,
    ) == [
        "Session ended: the shell exited with status 3.",
        "Could not open a shell: remote shell is disabled on this unit",
        "Session ended: no input for too long (the unit's idle timeout) (idle for 900 s).",
        "You ended the session.",
        "The connection to the service was lost (code 1006).",
    ]
