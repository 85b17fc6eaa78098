"""A small client for the emulator's control API.

    python -m tools.emulator.cli --control URL say --user 42 --bot tgsnap_demo_bot /start
    python -m tools.emulator.cli say --user 42 --bot tgsnap_demo_bot --button "Клик"
    python -m tools.emulator.cli messages -1001234567890 --limit 5
    python -m tools.emulator.cli knobs latency_ms=50 rate_limits=false
    python -m tools.emulator.cli fault server_error --method sendDocument --count 2

The control URL comes from --control or $TGSNAP_EMULATOR_CONTROL (the `control_url` the emulator prints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .knobs import FAULT_KINDS

ENV_CONTROL = "TGSNAP_EMULATOR_CONTROL"


class ControlClient:
    """Synchronous control API client (stdlib only)."""

    def __init__(self, control_url: str, timeout: float = 60.0) -> None:
        self.base = control_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - loopback URL
                raw = resp.read()
                if resp.headers.get("Content-Type", "").startswith("application/json"):
                    return json.loads(raw)
                return raw
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise SystemExit(f"control API {method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise SystemExit(f"cannot reach the emulator at {self.base}: {exc.reason}") from None


def _keyboard_lines(markup: dict[str, Any] | None) -> list[str]:
    if not markup:
        return []
    rows = markup.get("keyboard") or markup.get("inline_keyboard") or []
    kind = "keyboard" if "keyboard" in markup else "inline"
    return [f"  [{kind}] " + "  ".join(f"[{b if isinstance(b, str) else b.get('text')}]" for b in row)
            for row in rows]


def format_message(msg: dict[str, Any]) -> str:
    parts = [f"#{msg['message_id']}"]
    if msg.get("text") is not None:
        parts.append(msg["text"])
    if msg.get("document"):
        doc = msg["document"]
        parts.append(f"<document {doc['name']} {doc['size']} B {doc['file_unique_id']}>")
    if msg.get("caption"):
        parts.append(msg["caption"])
    if msg.get("pinned"):
        parts.append("(pinned)")
    if msg.get("edit_date"):
        parts.append("(edited)")
    return "\n".join([" ".join(parts), *_keyboard_lines(msg.get("reply_markup"))])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.emulator.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", default=os.environ.get(ENV_CONTROL),
                        help=f"control URL (default ${ENV_CONTROL})")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    sub = parser.add_subparsers(dest="cmd", required=True)

    sub.add_parser("info", help="URLs and ports")
    sub.add_parser("demo", help="create (once) and print the demo world")
    say = sub.add_parser("say", help="act as a user: send text (or press a button) to a bot, print the replies")
    say.add_argument("--user", required=True, help="user id or @username")
    say.add_argument("--bot", required=True, help="bot id or @username")
    say.add_argument("--button", action="store_true", help="press the button with this text instead of typing")
    say.add_argument("--wait", type=float, default=5.0, help="seconds to wait for replies (default 5)")
    say.add_argument("--expect", type=int, default=None, help="replies to wait for (default 1; 0 for inline)")
    say.add_argument("--expect-edits", type=int, default=0, help="edits of the bot's messages to wait for")
    say.add_argument("--settle", type=float, default=0.0, help="seconds to keep listening after that")
    say.add_argument("text")
    msgs = sub.add_parser("messages", help="list a chat's messages (channel id, or a user id with --bot)")
    msgs.add_argument("chat_id")
    msgs.add_argument("--bot", help="the bot side of a private chat")
    msgs.add_argument("--limit", type=int, default=20)
    sub.add_parser("channels", help="list channels")
    sub.add_parser("users", help="list users and bots")
    cu = sub.add_parser("create-user")
    cu.add_argument("first_name")
    cu.add_argument("--id", type=int)
    cu.add_argument("--username")
    cb = sub.add_parser("create-bot", help="prints the token")
    cb.add_argument("username")
    cb.add_argument("--name")
    cb.add_argument("--id", type=int)
    cc = sub.add_parser("create-channel")
    cc.add_argument("title")
    cc.add_argument("--creator", type=int)
    cc.add_argument("--admin", action="append", default=[], help="user/bot id or @username to make admin")
    cc.add_argument("--username")
    kn = sub.add_parser("knobs", help="show knobs, or set NAME=VALUE pairs")
    kn.add_argument("pairs", nargs="*")
    ft = sub.add_parser("fault", help="inject a fault")
    ft.add_argument("kind", choices=FAULT_KINDS)
    ft.add_argument("--front", default="*", choices=["*", "botapi", "mtproto"])
    ft.add_argument("--method", default="*")
    ft.add_argument("--count", type=int)
    ft.add_argument("--probability", type=float)
    ft.add_argument("--status", type=int, default=500)
    ft.add_argument("--hang-s", type=float, default=5.0)
    sub.add_parser("clear-faults")
    dl = sub.add_parser("download", help="save a file's content")
    dl.add_argument("file_unique_id")
    dl.add_argument("-o", "--output", required=True)
    return parser


def run(args: argparse.Namespace, client: ControlClient) -> Any:
    """Execute one command; returns the JSON answer (printing is left to `main`)."""
    cmd = args.cmd
    if cmd == "info":
        return client.request("GET", "/info")
    if cmd == "demo":
        return client.request("POST", "/demo")
    if cmd == "say":
        body: dict[str, Any] = {"user_id": args.user, "bot": args.bot, "wait": args.wait,
                                "expect_edits": args.expect_edits, "settle": args.settle,
                                ("button" if args.button else "text"): args.text}
        if args.expect is not None:
            body["expect"] = args.expect
        return client.request("POST", "/say", body)
    if cmd == "messages":
        return client.request("GET", f"/chats/{args.chat_id}/messages",
                              query={"bot": args.bot, "limit": args.limit, "order": "desc"})
    if cmd == "channels":
        return client.request("GET", "/channels")
    if cmd == "users":
        return client.request("GET", "/users")
    if cmd == "create-user":
        return client.request("POST", "/users", {"first_name": args.first_name, "user_id": args.id,
                                                 "username": args.username})
    if cmd == "create-bot":
        return client.request("POST", "/bots", {"username": args.username, "first_name": args.name,
                                                "user_id": args.id})
    if cmd == "create-channel":
        return client.request("POST", "/channels", {"title": args.title, "creator_id": args.creator,
                                                    "admins": args.admin, "username": args.username})
    if cmd == "knobs":
        if not args.pairs:
            return client.request("GET", "/knobs")
        values = dict(p.split("=", 1) for p in args.pairs)
        return client.request("POST", "/knobs", values)
    if cmd == "fault":
        count = args.count if args.count is not None or args.probability is not None else 1
        return client.request("POST", "/faults", {
            "kind": args.kind, "front": args.front, "method": args.method, "count": count,
            "probability": args.probability, "status": args.status, "hang_s": args.hang_s})
    if cmd == "clear-faults":
        return client.request("DELETE", "/faults")
    if cmd == "download":
        data = client.request("GET", f"/files/{args.file_unique_id}")
        with open(args.output, "wb") as fh:
            fh.write(data)
        return {"saved": args.output, "size": len(data)}
    raise SystemExit(f"unknown command {cmd}")


def render(args: argparse.Namespace, answer: Any) -> str:
    if args.json or not isinstance(answer, dict):
        return json.dumps(answer, ensure_ascii=False, indent=2)
    if args.cmd == "say":
        lines = [format_message(m) for m in answer.get("replies", [])]
        lines += [format_message(m) for m in answer.get("edits", [])]
        cb = answer.get("callback_answer")
        if cb and cb.get("text"):
            lines.append(f"(callback answer) {cb['text']}")
        if not lines:
            lines.append("(no reply)" + (" — timed out" if answer.get("timed_out") else ""))
        return "\n".join(lines)
    if args.cmd == "messages":
        return "\n".join(format_message(m) for m in reversed(answer["messages"])) or "(no messages)"
    return json.dumps(answer, ensure_ascii=False, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.control:
        parser.error(f"give --control URL or set ${ENV_CONTROL}")
    answer = run(args, ControlClient(args.control))
    print(render(args, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
