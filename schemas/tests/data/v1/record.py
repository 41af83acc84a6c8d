#!/usr/bin/env python3
"""Runs the Hermes of commit c696f9c (`hermes up`, one runner) against a nats-server of its own,
drives a small pipeline through its webhook and API, and saves every message it published on
HERMES_BUILDS and HERMES_LOGS, one file per message, payload bytes as published."""
import base64, hashlib, hmac, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

HERMES = sys.argv[1]        # the old hermes binary
NATS = sys.argv[2]          # nats-server
FIXTURES = sys.argv[3]      # tests/fixtures/github
OUT = sys.argv[4]           # where the events go
SECRET = "It's a Secret to Everybody"
TOKEN = "record-token"
work = tempfile.mkdtemp(prefix="hermes-record-")
NPORT, HPORT = 14299, 18099
BASE = f"http://127.0.0.1:{HPORT}"

nats = subprocess.Popen([NATS, "-js", "-sd", f"{work}/nats", "-a", "127.0.0.1", "-p", str(NPORT)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
env = dict(os.environ, NATS_URL=f"nats://127.0.0.1:{NPORT}", HERMES_DATA_DIR=f"{work}/data",
           HERMES_LISTEN=f"127.0.0.1:{HPORT}", HERMES_GITHUB_WEBHOOK_SECRET=SECRET,
           HERMES_CLONE_ALLOW="file://", HERMES_API_TOKEN=TOKEN, HERMES_RUNNERS="1",
           HERMES_RUNNER_NAME="recorder")
log = open(f"{work}/hermes.log", "w")
hermes = subprocess.Popen([HERMES, "up"], env=env, stdout=log, stderr=log)

def wait(what, f, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")

def get(path):
    try:
        with urllib.request.urlopen(BASE + path) as r:
            return json.loads(r.read())
    except Exception:
        return None

wait("hermes", lambda: get("/api/builds") is not None)

def repo(name, files):
    d = os.path.join(work, name)
    os.makedirs(d)
    for f, text in files.items():
        open(os.path.join(d, f), "w").write(text)
    git = lambda *a: subprocess.run(["git", *a], cwd=d, check=True, capture_output=True, text=True).stdout
    git("init", "-q", "-b", "main"); git("add", "-A")
    git("-c", "user.name=Ada", "-c", "user.email=ada@example.com", "commit", "-q", "-m", f"{name}")
    return d, git("rev-parse", "HEAD").strip()

YAML = "name: My super pipeline\nversion: 1.0.0\nschema: docker\n"
def deliver(event, delivery, body):
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(BASE + "/webhooks/github", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "292430182", "X-Hub-Signature-256": sig, "User-Agent": "GitHub-Hookshot/044aadd"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status

def push(name, files, delivery):
    d, sha = repo(name, files)
    body = open(f"{FIXTURES}/push/branch.json", "rb").read()
    body = body.replace(b"be4df22318c57aa1b5f98390add00977eaa464a7", sha.encode())
    body = body.replace(b"https://github.com/ada-dev/hello-hermes.git", f"file://{d}".encode())
    deliver("push", delivery, body)
    return sha

def build_of(sha):
    return wait(f"the build of {sha}", lambda: next((b for b in (get("/api/builds?repo=ada-dev/hello-hermes") or []) if b["commit"] == sha), None))

def final(sha):
    return wait(f"the end of {sha}", lambda: (lambda b: b if b and b["status"] not in ("queued", "running") else None)(
        next((b for b in (get("/api/builds?repo=ada-dev/hello-hermes") or []) if b["commit"] == sha), None)), within=180)

ok = push("succeeds", {"Hermes.yaml": YAML, "Dockerfile": "FROM hermes-test-base:latest\nRUN echo hello from a recorded build && echo second line\n"}, "rec-1")
print("succeeds:", final(ok)["status"])
bad = push("fails", {"Hermes.yaml": YAML, "Dockerfile": "FROM hermes-test-base:latest\nRUN echo about to fail && false\n"}, "rec-2")
print("fails:", final(bad)["status"])
broken = push("errors", {"Hermes.yaml": "name: [unclosed\n", "Dockerfile": "FROM hermes-test-base:latest\n"}, "rec-3")
print("errors:", final(broken)["status"], final(broken).get("error"))
slow = push("canceled", {"Hermes.yaml": YAML, "Dockerfile": "FROM hermes-test-base:latest\nRUN echo started && sleep 60\n"}, "rec-4")
b = wait("the slow build to run", lambda: (lambda b: b if b and b["status"] == "running" else None)(
    next((b for b in (get("/api/builds?repo=ada-dev/hello-hermes") or []) if b["commit"] == slow), None)))
time.sleep(2)
req = urllib.request.Request(f"{BASE}/api/builds/{b['id']}/cancel", method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
with urllib.request.urlopen(req) as r:
    print("cancel:", r.status)
print("canceled:", final(slow)["status"])
d, pr_sha = repo("pull-request", {"Hermes.yaml": YAML, "Dockerfile": "FROM hermes-test-base:latest\nRUN echo pr\n"})
body = open(f"{FIXTURES}/pull_request/opened.json", "rb").read()
body = body.replace(b"d5fd548bb2b96a243ee73255db5e8232e7dd8db1", pr_sha.encode())
body = body.replace(b"https://github.com/ada-dev/hello-hermes.git", f"file://{d}".encode())
deliver("pull_request", "rec-5", body)
print("pull request:", final(pr_sha)["status"])

# Every message of both streams, through JetStream's message API over the NATS protocol.
s = socket.create_connection(("127.0.0.1", NPORT))
f = s.makefile("rb")
f.readline()
s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _INBOX.rec 1\r\nPING\r\n')
assert f.readline().startswith(b"PONG")
def request(subject, payload):
    s.sendall(f"PUB {subject} _INBOX.rec {len(payload)}\r\n".encode() + payload + b"\r\n")
    while True:
        line = f.readline()
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n"); continue
        if line.startswith(b"MSG") or line.startswith(b"HMSG"):
            parts = line.split()
            n = int(parts[-1])
            data = f.read(n); f.read(2)
            if line.startswith(b"HMSG"):
                data = data[int(parts[-2]):]
            return json.loads(data)
os.makedirs(OUT, exist_ok=True)
for stream in ["HERMES_BUILDS", "HERMES_LOGS"]:
    info = request(f"$JS.API.STREAM.INFO.{stream}", b"{}")
    last = info["state"]["last_seq"]
    for seq in range(1, last + 1):
        m = request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode())["message"]
        payload = base64.b64decode(m["data"])
        kind = json.loads(payload)["type"]
        name = f"{stream}-{seq:04d}-{kind}.json"
        open(os.path.join(OUT, name), "wb").write(payload)
        print(name, m["subject"])
hermes.terminate(); hermes.wait(30)
nats.terminate(); nats.wait(10)
shutil.copy(f"{work}/hermes.log", "/tmp/record/hermes-old.log")
shutil.rmtree(work, ignore_errors=True)
