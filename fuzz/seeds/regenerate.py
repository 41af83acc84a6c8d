#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets from the GitHub payload fixtures.

Usage: python3 fuzz/seeds/regenerate.py [FIXTURES]   (FIXTURES defaults to the project's own
tests/fixtures/github, or $HERMES_FIXTURES). Each fixture becomes:
  webhook_decide/<event>.<name>        one selector byte (ASCII digit, see EVENT) + the payload
  webhook_form/json.<event>.<name>     '0' (application/json) + digit + '@' (no flags) + the payload
  webhook_form/form.<event>.<name>     '1' (form) + digit + '@' + "payload=" + the payload, URL-encoded
The payload bytes are those of the fixture, unchanged. hermes_yaml/ is written by hand.
"""
import pathlib
import sys
import urllib.parse

EVENT = {"push": "0", "pull_request": "1", "ping": "2", "star": "3", "issues": "4", "check_run": "5"}

here = pathlib.Path(__file__).resolve().parent
repo = here.parent.parent
import os
default = os.environ.get("HERMES_FIXTURES") or repo / "tests" / "fixtures" / "github"
fixtures = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(default)

decide = here / "webhook_decide"
form = here / "webhook_form"
for d in (decide, form):
    d.mkdir(exist_ok=True)
    for f in d.glob("*.json"):
        f.unlink()

count = 0
for event, digit in EVENT.items():
    for f in sorted((fixtures / event).glob("*.json")):
        body = f.read_bytes()
        (decide / f"{event}.{f.name}").write_bytes(digit.encode() + body)
        (form / f"json.{event}.{f.name}").write_bytes(b"0" + digit.encode() + b"@" + body)
        encoded = urllib.parse.quote_plus(body).encode()
        (form / f"form.{event}.{f.name}").write_bytes(b"1" + digit.encode() + b"@payload=" + encoded)
        count += 1
print(f"{count} fixtures from {fixtures}")
