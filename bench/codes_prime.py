#!/usr/bin/env python3
"""Sign in once on the hosted login page, then mint N authorization codes with the sign-on
cookie (GET /oauth/authorize answers each with a redirect carrying a code, no page), all with
one PKCE challenge. Writes one code per line. With N = 0 it only signs in and prints the
`Cookie` header value and the authorization path and query, one per line (for
bench/wrk/mint_codes.lua, which mints faster). Loopback only, standard library only.

usage: codes_prime.py BASE_URL USER PASSWORD CLIENT_ID REDIRECT_URI CHALLENGE N OUTFILE [CONCURRENCY]
"""
import http.cookiejar
import re
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, user, password, client_id, redirect_uri, challenge, n, out = sys.argv[1:9]
n = int(n)
concurrency = int(sys.argv[9]) if len(sys.argv) > 9 else 4
if urllib.parse.urlsplit(base).hostname not in ("127.0.0.1", "localhost", "::1"):
    sys.exit("codes_prime.py: loopback targets only")
query = urllib.parse.urlencode({
    "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
    "code_challenge": challenge, "code_challenge_method": "S256", "state": "bench",
})
authorize = f"{base}/oauth/authorize?{query}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
page = opener.open(authorize, timeout=30).read().decode()
fields = dict(re.findall(r'name="(transaction|csrf)" value="([^"]*)"', page))
login = urllib.parse.urlencode({**fields, "username": user, "password": password, "action": "login"})
try:
    opener.open(f"{base}/oauth/authorize/login", data=login.encode(), timeout=60)
    sys.exit("codes_prime.py: the login did not redirect")
except urllib.error.HTTPError as answer:
    if answer.code != 303:
        sys.exit(f"codes_prime.py: login answered {answer.code}")


if n == 0:
    with open(out, "w") as f:
        f.write("; ".join(f"{c.name}={c.value}" for c in jar) + "\n")
        f.write(f"/oauth/authorize?{query}\n")
    sys.exit(0)


def mint(_):
    try:
        opener.open(authorize, timeout=30)
    except urllib.error.HTTPError as answer:
        location = answer.headers.get("Location", "")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("code")
        return code[0] if code else None
    return None


with ThreadPoolExecutor(concurrency) as pool:
    codes = [c for c in pool.map(mint, range(n)) if c]
with open(out, "w") as f:
    f.write("\n".join(codes) + "\n")
print(f"codes_prime.py: {len(codes)} codes", file=sys.stderr)
sys.exit(0 if len(codes) == n else 1)
