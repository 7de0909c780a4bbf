#!/usr/bin/env python3
"""Log in N times (POST /auth/login, loopback only) and write one refresh token per line.

usage: prime.py BASE_URL USER PASSWORD N OUTFILE [CONCURRENCY]   (standard library only)
"""
import json
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, user, password, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else 4
if urllib.parse.urlsplit(base).hostname not in ("127.0.0.1", "localhost", "::1"):
    sys.exit("prime.py: loopback targets only")
body = json.dumps({"username": user, "password": password}).encode()


def login(_):
    request = urllib.request.Request(
        base + "/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response).get("refresh_token")
    except Exception as error:  # noqa: BLE001 - counted below, the run goes on
        print(f"prime.py: login failed: {error}", file=sys.stderr)
        return None


with ThreadPoolExecutor(concurrency) as pool:
    tokens = [t for t in pool.map(login, range(n)) if t]
with open(out, "w") as f:
    f.write("\n".join(tokens) + "\n")
if len(tokens) < n:
    print(f"prime.py: only {len(tokens)} of {n} logins succeeded", file=sys.stderr)
sys.exit(0 if len(tokens) == n else 1)
