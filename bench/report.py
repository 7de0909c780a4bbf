#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the refresh-vs-connections SVG from one bench/run.sh run.

Standard library only. Inputs: the wrk RESULT lines (JSON lines, one per run), the facts
(JSON lines: memory, CPU time, openssl figures), openssl speed's and criterion's output.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess

SERVERS = ["redis", "embedded-fsync", "embedded-process"]
COLOURS = {"redis": "#c0392b", "embedded-fsync": "#2471a3", "embedded-process": "#229954"}


def load_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def command(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return f"{os.cpu_count()} cores ({model}), {mem_kib // 1024 // 1024} GiB, {platform.system()} {platform.release()}"


def svg(runs, path):
    """Throughput and p99 against connections, one line per store, log-spaced x."""
    conns = sorted({r["connections"] for r in runs})
    width, height, pad = 440, 300, 60
    panels = [("refresh/s", lambda r: r["ok_rps"]), ("p99 (ms)", lambda r: r["p99_us"] / 1000)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height + 40}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{2 * width}" height="{height + 40}" fill="white"/>']
    for index, (label, value) in enumerate(panels):
        x0 = index * width + pad
        plot_w, plot_h = width - pad - 20, height - pad - 20
        top = max((value(r) for r in runs), default=1) * 1.1 or 1

        def x(c):
            return x0 + conns.index(c) * plot_w / max(len(conns) - 1, 1)

        def y(v):
            return 20 + plot_h - v / top * plot_h

        out.append(f'<text x="{x0 + plot_w / 2}" y="14" text-anchor="middle" font-weight="bold">'
                   f'refresh chain: {label}</text>')
        out.append(f'<line x1="{x0}" y1="{20 + plot_h}" x2="{x0 + plot_w}" y2="{20 + plot_h}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="20" x2="{x0}" y2="{20 + plot_h}" stroke="black"/>')
        for step in range(5):
            v = top * step / 4
            out.append(f'<text x="{x0 - 6}" y="{y(v) + 4}" text-anchor="end">{v:,.0f}</text>')
            out.append(f'<line x1="{x0}" y1="{y(v)}" x2="{x0 + plot_w}" y2="{y(v)}" stroke="#ddd"/>')
        for c in conns:
            out.append(f'<text x="{x(c)}" y="{36 + plot_h}" text-anchor="middle">{c}</text>')
        out.append(f'<text x="{x0 + plot_w / 2}" y="{54 + plot_h}" text-anchor="middle">connections</text>')
        for server in SERVERS:
            points = sorted((r["connections"], value(r)) for r in runs if r["server"] == server)
            if not points:
                continue
            coords = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in points)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{COLOURS[server]}" stroke-width="2"/>')
            for c, v in points:
                out.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="3" fill="{COLOURS[server]}"/>')
    for i, server in enumerate(SERVERS):
        lx = pad + i * 180
        out.append(f'<rect x="{lx}" y="{height + 20}" width="12" height="12" fill="{COLOURS[server]}"/>')
        out.append(f'<text x="{lx + 18}" y="{height + 30}">{server}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser()
    for name in ("results", "facts", "openssl", "criterion", "duration", "rounds", "out", "svg"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    # Before anything is written: the SVG below is itself tracked.
    commit = command("git", "rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if command("git", "status", "--porcelain", "--untracked-files=no") else ""
    runs = load_lines(args.results)
    facts = {}
    for fact in load_lines(args.facts):
        facts.update(fact)

    def runs_of(scenario, server, conns=32):
        return [r for r in runs
                if r["scenario"] == scenario and r["server"] == server and r["connections"] == conns]

    def run(scenario, server, conns=32):
        """The median run by throughput (the lower middle one of an even count)."""
        matching = sorted(runs_of(scenario, server, conns), key=lambda r: r["ok_rps"])
        return matching[(len(matching) - 1) // 2] if matching else None

    def spread(scenario, server, conns=32):
        """' (median of 3: 18,900-19,700/s)' when the scenario ran more than once."""
        rates = sorted(r["ok_rps"] for r in runs_of(scenario, server, conns))
        if len(rates) < 2:
            return ""
        return f" (median of {len(rates)}: {rates[0]:,.0f}–{rates[-1]:,.0f}/s)"

    def errors(r):
        return r["non2xx"] + r["socket_errors"] + r["starved"]

    rows = []

    def target(name, met, figure):
        rows.append((name, figure, "met" if met else "**missed**"))

    r = run("refresh", "redis")
    if r:
        target("refresh chain on Redis ≥ 20,000/s, p99 < 10 ms (32 connections)",
               r["ok_rps"] >= 20000 and r["p99_us"] < 10000,
               f"{r['ok_rps']:,.0f}/s ({r['ok_rps'] / 20000:.0%} of target), p99 {r['p99_us'] / 1000:.1f} ms, "
               f"{errors(r)} errors{spread('refresh', 'redis')}")
    for server in ("embedded-fsync", "embedded-process"):
        r = run("refresh", server)
        if r:
            target(f"refresh chain on the embedded store ≥ 10,000/s, `{server.split('-')[1]}` (32 connections)",
                   r["ok_rps"] >= 10000,
                   f"{r['ok_rps']:,.0f}/s ({r['ok_rps'] / 10000:.0%} of target), p99 {r['p99_us'] / 1000:.1f} ms, "
                   f"{errors(r)} errors{spread('refresh', server)}")
    r = run("client_credentials", "redis")
    if r:
        cpu = facts.get("client_credentials_server_cpu_s")
        sign = facts.get("openssl_es256_sign_per_s")
        per_core = ""
        if cpu and sign:
            tokens_per_cpu_s = sum(x["requests"] for x in runs_of("client_credentials", "redis")) / cpu
            per_core = f"; {tokens_per_cpu_s:,.0f} tokens per server CPU-second = {tokens_per_cpu_s / sign:.0%} of `openssl speed` ES256 signs per core"
        target("client_credentials ≥ 30,000 tokens/s", r["ok_rps"] >= 30000 and errors(r) == 0,
               f"{r['ok_rps']:,.0f}/s{spread('client_credentials', 'redis')}{per_core}")
    for scenario, label in (("jwks", "JWKS"), ("discovery", "discovery")):
        r = run(scenario, "redis")
        if r:
            target(f"{label} ≥ 80,000/s", r["ok_rps"] >= 80000,
                   f"{r['ok_rps']:,.0f}/s{spread(scenario, 'redis')}")
    r = run("userinfo", "redis")
    if r:
        target("`/auth/userinfo` (verify path) ≥ 25,000/s", r["ok_rps"] >= 25000 and errors(r) == 0,
               f"{r['ok_rps']:,.0f}/s{spread('userinfo', 'redis')}")
        ed = run("userinfo_eddsa", "redis")
        if ed:
            target("`/auth/userinfo` with an EdDSA (Ed25519) key, beside the ES256 one",
                   errors(ed) == 0,
                   f"{ed['ok_rps']:,.0f}/s{spread('userinfo_eddsa', 'redis')}, "
                   f"{ed['ok_rps'] / r['ok_rps']:.2f}× the ES256 figure")
    r, storm = run("refresh_during_logins", "redis"), run("login_storm", "redis", 50)
    if r and storm:
        target("refresh p99 < 25 ms during a storm of 50 concurrent logins (shipped argon2 cost)",
               r["p99_us"] < 25000,
               f"p99 {r['p99_us'] / 1000:.1f} ms at {r['ok_rps']:,.0f} refresh/s, "
               f"while logins ran at {storm['ok_rps']:,.0f}/s (p99 {storm['p99_us'] / 1000:.0f} ms)")
    peaks = {s: facts[f"peak_rss_kib_{s}"] for s in SERVERS if f"peak_rss_kib_{s}" in facts}
    if peaks:
        target("issuer RSS < 64 MiB through every scenario (peak, VmHWM)",
               max(peaks.values()) < 64 * 1024,
               ", ".join(f"{s} {kib / 1024:.0f} MiB" for s, kib in peaks.items()))
    churned = facts.get("sessions_after_rotations")
    if churned:
        login = facts.get("sessions_after_login", {})
        target("Redis memory per live session < 1 KiB (10,000 sessions)",
               max(churned["used_memory"], churned["key_memory"]) / 10000 < 1024,
               f"{churned['used_memory'] / 10000:,.0f} B (used_memory) / {churned['key_memory'] / 10000:,.0f} B "
               f"(MEMORY USAGE) after ~30 rotations each; {login.get('used_memory', 0) / 10000:,.0f} B / "
               f"{login.get('key_memory', 0) / 10000:,.0f} B after login")

    dpop_rows = []
    for server in ("redis", "embedded-process"):
        plain, bound = run("refresh_plain", server), run("refresh_dpop", server)
        if plain and bound:
            dpop_rows.append(
                f"| {server} | {plain['ok_rps']:,.0f} (p99 {plain['p99_us'] / 1000:.1f} ms) | "
                f"{bound['ok_rps']:,.0f} (p99 {bound['p99_us'] / 1000:.1f} ms) | "
                f"{bound['ok_rps'] / plain['ok_rps']:.0%} | {errors(plain)} / {errors(bound)} |")

    # The sweep: one run per store and connection count (the median where a count ran more).
    sweep = [run("refresh", server, conns) for server in SERVERS
             for conns in sorted({r["connections"] for r in runs if r["scenario"] == "refresh"})]
    sweep = [r for r in sweep if r]
    svg(sweep, args.svg)

    lines = [
        "# latchkey benchmarks",
        "",
        "Produced by `bash bench/run.sh` (do not edit by hand; rerun it). Analysis of misses and",
        "the profiles behind them: [bench/REPORT.md](bench/REPORT.md).",
        "",
        f"- run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, commit `{commit}`{dirty}",
        f"- machine: {machine()}; wrk, Redis and the issuers all share it",
        f"- {command('wrk', '--version').splitlines()[0] if command('wrk', '--version') else 'wrk'}; "
        f"{command('redis-server', '--version')}; {command('openssl', 'version')}",
        f"- each run: `wrk -t2 -c<connections> -d{args.duration}s`; issuers at the shipped token and argon2 "
        "settings, one ES256 key, `LATCHKEY_LOG=warn`",
        f"- each target's scenario ran {args.rounds} times, alternating with the others; a target's figure "
        "is the median run (the range follows it)",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {figure} | {verdict} |" for name, figure, verdict in rows]
    lines += [
        "",
        "## Refresh against connections",
        "",
        "Each connection runs its own chain: log in, then present every new refresh token exactly",
        "once (`bench/wrk/refresh.lua`).",
        "",
        "![refresh throughput and p99 against connections](bench/refresh-vs-connections.svg)",
        "",
        "| store | connections | refresh/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for server in SERVERS:
        for r in sorted((r for r in sweep if r["server"] == server), key=lambda r: r["connections"]):
            lines.append(f"| {server} | {r['connections']} | {r['ok_rps']:,.0f} | {r['p50_us'] / 1000:.1f} | "
                         f"{r['p99_us'] / 1000:.1f} | {errors(r)} |")
    code_rows = []
    for server in SERVERS:
        exchange, refresh = run("code_exchange", server), run("refresh", server, 32)
        if exchange:
            ratio = f"{exchange['ok_rps'] / refresh['ok_rps']:.0%}" if refresh else "-"
            code_rows.append(
                f"| {server} | {exchange['ok_rps']:,.0f}{spread('code_exchange', server)} | "
                f"{exchange['p99_us'] / 1000:.1f} | {refresh['ok_rps']:,.0f} | {ratio} | {errors(exchange)} |"
                if refresh else
                f"| {server} | {exchange['ok_rps']:,.0f} | {exchange['p99_us'] / 1000:.1f} | - | - | {errors(exchange)} |")
    if code_rows:
        lines += ["", "## Authorization-code exchange beside refresh", "",
                  "`POST /oauth/token` with `grant_type=authorization_code` at 32 connections, every code "
                  "used once (`bench/wrk/code.lua`; the codes minted just before with a sign-on cookie by "
                  "`bench/codes_prime.py`, one PKCE verifier for all). An exchange costs one atomic consume "
                  "of the code, one user read, one family created and one signature; a refresh, one atomic "
                  "rotation and one signature.", "",
                  "| store | exchanges/s | p99 ms | refresh/s (same run) | exchange / refresh | errors |",
                  "|---|---|---|---|---|---|"] + code_rows
    if dpop_rows:
        lines += ["", "## Refresh with and without DPoP", "",
                  "The same chain at 32 connections, back to back: without proofs, then with every session "
                  "bound at login and a fresh DPoP proof on every refresh (`bench/wrk/refresh.lua` with a proofs file; "
                  "proofs signed before the run by `bench/dpop_prime.rs`). A DPoP refresh costs one proof "
                  "verification (ECDSA P-256) and one store write (its `jti`) more.", "",
                  "| store | refresh/s, bearer | refresh/s, DPoP | DPoP / bearer | errors |",
                  "|---|---|---|---|---|"] + dpop_rows
    lines += ["", "## Every run", "", "| scenario | server | connections | req/s | p50 ms | p99 ms | errors |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["scenario"] != "refresh" or r["connections"] == 32:
            lines.append(f"| {r['scenario']} | {r['server']} | {r['connections']} | {r['ok_rps']:,.0f} | "
                         f"{r['p50_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | {errors(r)} |")
    lines += ["", "The login storm's errors are by design: 50 connections log in at once against one "
              "argon2 thread, and checks beyond the hashing queue (32 per thread) are answered at once "
              "with `503 temporarily_unavailable` and `Retry-After` rather than queued without bound; "
              "wrk retries them immediately, so they count in thousands."]
    with open(args.openssl) as f:
        openssl = f.read().rstrip()
    with open(args.criterion) as f:
        criterion = f.read().rstrip()
    lines += ["", "## Crypto, same run", "", "`openssl speed -seconds 3 ecdsap256 rsa2048 ed25519` (one core):", "",
              "```", openssl, "```", ""]
    if criterion:
        lines += ["criterion (`cargo bench -p latchkey --bench issuer`, `-p latchkey-verify --bench verify`):",
                  "", "```", criterion, "```", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
