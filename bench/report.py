"""Parsing load-generator output, medians, ratios, tables and RESULTS.md for
bench/run. Latencies are in milliseconds, CPU in seconds, RSS in KiB."""

import json
import re
import statistics
from pathlib import Path

NOTES_MARKER = "<!-- notes: kept across runs -->"
MB = 1_000_000 / 1024  # KiB in one MB (10^6 bytes): the RSS target is in MB


# ---------------------------------------------------------------- parsers


def parse_oha(stdout, stderr):
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"bench/run: oha printed no JSON: {stdout[-500:]} {stderr[-500:]}")
    codes = {int(code): count for code, count in data.get("statusCodeDistribution", {}).items()}
    ok = sum(count for code, count in codes.items() if 200 <= code < 300)
    errors = sum(codes.values()) - ok + sum(data.get("errorDistribution", {}).values())
    percentiles = data["latencyPercentiles"]
    seconds = lambda key: (percentiles.get(key) or 0) * 1e3  # noqa: E731
    return {
        "requests": ok,
        "rps": data["summary"]["requestsPerSec"],
        "p50": seconds("p50"),
        "p90": seconds("p90"),
        "p99": seconds("p99"),
        "max": (data["summary"].get("slowest") or 0) * 1e3,
        "errors": errors,
        "detail": json.dumps({**data.get("errorDistribution", {}), **{k: v for k, v in codes.items() if not 200 <= k < 300}}),
    }


def wrk_ms(text):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]


def parse_wrk(stdout):
    figures = {"errors": 0}
    for line in stdout.splitlines():
        words = line.split()
        if line.strip().startswith(("50%", "90%", "99%")):
            figures["p" + words[0].rstrip("%")] = wrk_ms(words[1])
        elif line.strip().startswith("Latency") and len(words) >= 4 and "Distribution" not in line:
            figures["max"] = wrk_ms(words[3])
        elif "requests in" in line:
            figures["requests"] = int(words[0])
        elif line.startswith("Requests/sec:"):
            figures["rps"] = float(words[1])
        elif "Non-2xx" in line:
            figures["errors"] += int(words[-1])
        elif "Socket errors" in line:
            figures["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
    if "rps" not in figures:
        raise SystemExit(f"bench/run: cannot read wrk's output: {stdout[-500:]}")
    figures["requests"] -= figures["errors"]
    return figures


def parse_h2load(stdout, log_file, duration):
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", stdout)
    if not match:
        raise SystemExit(f"bench/run: cannot read h2load's output: {stdout[-800:]}")
    _, started, done, succeeded, failed, errored, timeout = map(int, match.groups())
    latencies = []
    if Path(log_file).exists():
        for line in Path(log_file).read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and 200 <= int(fields[1]) < 300:
                latencies.append(int(fields[2]) / 1e3)
    latencies.sort()
    return {
        "requests": succeeded,
        "rps": succeeded / duration,
        "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else 0.0,
        # started - done: requests still in flight when -D ended, not failures.
        "errors": failed + errored + timeout,
        "detail": match.group(0),
    }


def percentile(values, fraction):
    if not values:
        return 0.0
    return values[min(len(values) - 1, round((len(values) - 1) * fraction))]


def one_line(figures):
    detail = f"  ({figures['detail']})" if figures["errors"] and figures.get("detail") else ""
    return (
        f"rps {figures['rps']:9.0f}  p50 {figures['p50']:6.3f}  p99 {figures['p99']:7.3f} ms  "
        f"cpu {sum(figures['cpu_s']):5.2f} s  errors {figures['errors']}{detail}"
    )


# ---------------------------------------------------------------- summary


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(results):
    """Per scenario and configuration: medians over rounds, added latency
    (paired with the direct run of the same round), ratios."""
    summary = {}
    for scenario, data in results["scenarios"].items():
        runs = data["runs"]
        direct = {run["round"]: run for run in runs if run["config"] == "direct"}
        rows = {}
        for name in dict.fromkeys(run["config"] for run in runs):
            mine = [run for run in runs if run["config"] == name]
            hops = len(mine[0]["cpu_s"])
            row = {"peers": mine[0]["peers"], "rounds": len(mine)}
            for key in ("p50", "p90", "p99", "max", "rps"):
                row[key] = median(run[key] for run in mine)
                row["added_" + key] = median(run[key] - direct[run["round"]][key] for run in mine if run["round"] in direct)
            row["errors"] = sum(run["errors"] for run in mine)
            if hops:
                # CPU seconds per 1,000 requests, per proxy process (pair: mean of both).
                row["cpu_s_per_1k"] = median(sum(run["cpu_s"]) / hops / max(run["requests"], 1) * 1000 for run in mine)
                peaks = data["peak_rss_kib"].get(name, [])
                row["peak_rss_kib"] = max(peaks) if peaks else None  # the larger sidecar of a pair
                split = data.get("rss_split_kib", {}).get(name, [])
                if split:  # the larger sidecar's, at the end of the scenario
                    row["rss_split_kib"] = max(split, key=lambda s: s["anon"] + s["file"])
            rows[name] = row
        direct_row = rows.get("direct", {})
        for name, row in rows.items():
            row["p99_vs_direct"] = ratio(row["p99"], direct_row.get("p99"))
            row["rps_vs_direct"] = ratio(row["rps"], direct_row.get("rps"))
            envoy = rows.get("envoy-pair" if name.endswith("-pair") else "envoy")
            if envoy and row["peers"]:
                row["added_p99_vs_envoy"] = ratio(row["added_p99"], envoy["added_p99"])
                row["cpu_vs_envoy"] = ratio(row.get("cpu_s_per_1k"), envoy.get("cpu_s_per_1k"))
                row["rss_vs_envoy"] = ratio(row.get("peak_rss_kib"), envoy.get("peak_rss_kib"))
                row["rps_vs_envoy"] = ratio(row["rps"], envoy["rps"])
        summary[scenario] = rows
    summary["targets"] = targets(summary, results.get("control_plane"))
    return summary


def targets(summary, control_plane):
    """The issue's targets, each met / missed / not measured, with ratios."""
    out = []
    h1 = summary.get("h1", {})

    def row(name):
        return h1.get(name, {})

    mtls = row("weft-mtls-pair")
    pair = mtls or row("weft-pair")
    haproxy_pair, envoy_pair = row("haproxy-pair"), row("envoy-pair")
    if pair and haproxy_pair:
        vs_haproxy = ratio(pair["added_p99"], haproxy_pair["added_p99"])
        met = vs_haproxy is not None and pair["added_p99"] <= haproxy_pair["added_p99"]
        what = "Weft mTLS pair" if mtls else "Weft PLAINTEXT pair (the mTLS pair is not measured yet)"
        envoy = (f"; Envoy plaintext pair {ms(envoy_pair['added_p99'])} (ratio {fmt_ratio(ratio(pair['added_p99'], envoy_pair['added_p99']))})"
                 if envoy_pair else "")
        out.append({
            "target": "sidecar pair with mTLS at 1,000 rps: added p99 ≤ HAProxy plaintext pair's",
            "status": ("met" if met else "missed") if mtls else ("not measured" + (" (plaintext pair would meet it)" if met else " (plaintext pair misses it)")),
            "detail": f"{what}: added p99 {ms(pair['added_p99'])}; HAProxy pair {ms(haproxy_pair['added_p99'])} "
                      f"(ratio {fmt_ratio(vs_haproxy)}, needs ≤ 1){envoy}",
        })
    for path, weft, haproxy, envoy in (("one proxy", "weft", "haproxy", "envoy"),
                                        ("pair", "weft-pair", "haproxy-pair", "envoy-pair")):
        w, h, e = row(weft), row(haproxy), row(envoy)
        if w.get("cpu_s_per_1k") and h.get("cpu_s_per_1k"):
            vs_h = ratio(w["cpu_s_per_1k"], h["cpu_s_per_1k"])
            status = "met, stretch met" if vs_h <= 0.5 else "met" if vs_h <= 1 else "missed"
            envoy_part = (f", Envoy {cpu(e['cpu_s_per_1k'])} (ratio {fmt_ratio(ratio(w['cpu_s_per_1k'], e['cpu_s_per_1k']))})"
                          if e.get("cpu_s_per_1k") else "")
            out.append({
                "target": f"CPU per 1,000 requests per proxy ({path}, 1,000 rps): ≤ HAProxy's (stretch: ≤ 1/2)",
                "status": status,
                "detail": f"Weft {cpu(w['cpu_s_per_1k'])}, HAProxy {cpu(h['cpu_s_per_1k'])} (ratio {fmt_ratio(vs_h)}, needs ≤ 1, "
                          f"stretch ≤ 0.5){envoy_part}",
            })
    for name in ("weft-mtls-pair", "weft-pair", "weft"):
        if row(name).get("peak_rss_kib"):
            rss = row(name)["peak_rss_kib"]
            split = row(name).get("rss_split_kib")
            split_text = (f"; at the end {split['anon'] / 1024:.1f} MiB private (RssAnon) + {split['file'] / 1024:.1f} MiB "
                          f"file-backed (RssFile: the binary's and libraries' pages, shared by every process running them)"
                          if split else "")
            out.append({
                "target": f"RSS per sidecar at 1,000 rps ≤ 10 MiB ({name})",
                "status": "met" if rss <= 10 * 1024 else "missed",
                "detail": f"peak RSS (VmHWM) {rss / 1024:.1f} MiB, ratio {fmt_ratio(rss / (10 * 1024))} of the target{split_text}",
            })
            break
    top = summary.get("h1max", {})
    w, h = top.get("weft", {}), top.get("haproxy", {})
    if w.get("rps") and h.get("rps"):
        out.append({
            "target": "maximum rate (h1max): no loss against the previous build (compare with the last run's figure)",
            "status": "measured",
            "detail": f"Weft {w['rps']:.0f} rps, HAProxy {h['rps']:.0f} rps (ratio {fmt_ratio(ratio(w['rps'], h['rps']))})",
        })
    if control_plane and control_plane.get("error"):
        out.append({"target": "control plane (p99 < 1 s to 1,000 proxies; weftd < 300 MB)", "status": "not measured",
                    "detail": control_plane["error"]})
    elif control_plane:
        cp = control_plane
        p99_s = cp["ack_p99_ms"] / 1e3
        rss_mb = cp["weftd_peak_rss_mib"] * 1.048576
        out.append({
            "target": "control plane: endpoint change reaches 1,000 proxies with p99 < 1 s",
            "status": ("met" if p99_s < 1 else "missed") + ("" if cp["proxies"] >= 1000 else f" (at {cp['proxies']} proxies only)"),
            "detail": f"{cp['proxies']} proxies: p50 {cp['ack_p50_ms']:.0f} ms, p99 {cp['ack_p99_ms']:.0f} ms (ratio {fmt_ratio(p99_s)} of 1 s)",
        })
        out.append({
            "target": "control plane: weftd < 300 MB",
            "status": "met" if rss_mb < 300 else "missed",
            "detail": f"weftd peak RSS {rss_mb:.0f} MB ({cp['weftd_peak_rss_mib']:.0f} MiB), ratio {fmt_ratio(rss_mb / 300)} of 300 MB",
        })
    return out


# ---------------------------------------------------------------- formatting


def ms(value):
    return "–" if value is None else f"{value:.3f} ms"


def cpu(value):
    return "–" if value is None else f"{value * 1e3:.1f} ms"


def fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def num(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows, scenario):
    fixed = scenario != "h1max"
    lines = [
        "| path | p50 | p90 | p99 | max | added p50 | added p99 | rps | CPU ms / 1k req / proxy | peak RSS MiB / proxy "
        "| errors | p99 ÷ direct | added p99 ÷ Envoy | CPU ÷ Envoy | RSS ÷ Envoy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        rss = row.get("peak_rss_kib")
        errors = f"**{row['errors']} ⚠**" if row["errors"] else "0"
        lines.append(
            f"| {name} | {num(row['p50'])} | {num(row['p90'])} | {num(row['p99'])} | {num(row['max'], 2)} "
            f"| {num(row['added_p50']) if row['peers'] else ''} | {num(row['added_p99']) if row['peers'] else ''} "
            f"| {row['rps']:.0f} | {num((row.get('cpu_s_per_1k') or 0) * 1e3, 1) if row['peers'] else ''} "
            f"| {num(rss / 1024, 1) if rss else ''} | {errors} | {fmt_ratio(row['p99_vs_direct'])} "
            f"| {fmt_ratio(row.get('added_p99_vs_envoy')) if row['peers'] else ''} "
            f"| {fmt_ratio(row.get('cpu_vs_envoy')) if row['peers'] else ''} "
            f"| {fmt_ratio(row.get('rss_vs_envoy')) if row['peers'] else ''} |"
        )
    note = "Latencies in ms (medians of rounds)."
    if not fixed:
        note += " Maximum-rate run: latencies are queueing at saturation (wrk, not corrected); compare rps and CPU."
    return "\n".join(lines) + "\n\n" + note + "\n"


def markdown(results):
    summary = results["summary"]
    parts = [
        f"{results['rounds']} rounds × {results['duration_s']} s per configuration, interleaved; "
        f"medians of rounds; {results['machine']['nproc']} cores ({results['machine']['model']})\n"
    ]
    for scenario, data in results["scenarios"].items():
        parts.append(f"### {scenario}: {data['title']}\n")
        parts.append(table(summary[scenario], scenario))
    if summary["targets"]:
        parts.append("### Targets\n")
        parts.append("| target | status | figures |\n|---|---|---|")
        for target in summary["targets"]:
            parts.append(f"| {target['target']} | **{target['status']}** | {target['detail']} |")
        parts.append("")
    if results.get("control_plane") and not results["control_plane"].get("error"):
        cp = results["control_plane"]
        parts.append(
            f"### Control plane\n\n{cp['services']} services, {cp['endpoints']} endpoints, {cp['proxies']} simulated proxies on "
            f"real gRPC streams, {cp['changes']} endpoint changes: change → ACK by every proxy p50 {cp['ack_p50_ms']:.0f} ms, "
            f"p99 {cp['ack_p99_ms']:.0f} ms, max {cp['ack_max_ms']:.0f} ms; initial sync of all proxies {cp['sync_s']:.1f} s; "
            f"weftd CPU {cp['weftd_cpu_s']:.1f} s in total ({cp['weftd_cpu_s_per_change']:.2f} s per change), "
            f"RSS {cp['weftd_rss_mib']:.0f} MiB, peak {cp['weftd_peak_rss_mib']:.0f} MiB.\n"
        )
    return "\n".join(parts)


def write_results(results, path):
    path = Path(path)
    notes = ""
    if path.exists() and NOTES_MARKER in path.read_text():
        notes = path.read_text().split(NOTES_MARKER, 1)[1]
    m = results["machine"]
    machine = "\n".join(f"- {key}: {value}" for key, value in m.items())
    path.write_text(
        "# Benchmark results\n\n"
        "Written by `bench/run` after a full run (the table part; the notes at the end are kept). "
        "How to read the figures: [README.md](README.md).\n\n"
        f"## Machine\n\n{machine}\n\n"
        f"## Latest full run ({m['date']}, {results['elapsed_s']:.0f} s)\n\n"
        + markdown(results)
        + "\n"
        + NOTES_MARKER
        + (notes if notes else "\n\n## Notes\n")
    )
