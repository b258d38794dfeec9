"""Custom Apprise plugins for the chat bots' native rich formats.

Apprise 2.2.0's ``wecombot://``, ``feishu://`` and ``lark://`` post plain text only, and its
``dingtalk://`` posts markdown without putting @mentions into the text (so they do not render).
These plugins, registered with Apprise's ``@notify`` decorator (never bypassing Apprise),
post each bot's native format:

=====================================================  ==========================================
URL                                                    posts
=====================================================  ==========================================
``kpiwecom://KEY[?mention=uid1,uid2]``                 WeCom group bot ``msgtype: markdown``
``kpidingtalk://[SECRET@]TOKEN[?at=mobile,..&atall=yes]``  DingTalk ``markdown``, signed, @mentions
``kpifeishu://[SECRET@]TOKEN``                         Feishu interactive card (signed if SECRET)
``kpilark://[SECRET@]TOKEN``                           the same card on Lark (larksuite.com)
=====================================================  ==========================================

Every URL also takes ``base=http://127.0.0.1:PORT`` (URL-encoded) to replace the service's
``https://host`` (tests point it at a local receiver; a proxy or private gateway works too).
Importing this module registers the schemes once per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import requests
from apprise.decorators import notify

__all__ = ["SCHEMES", "dingtalk_sign", "feishu_sign"]

log = logging.getLogger(__name__)

SCHEMES = ("kpiwecom", "kpidingtalk", "kpifeishu", "kpilark")
TIMEOUT_S = (4.0, 10.0)  # connect, read
WECOM_MARKDOWN_MAX_BYTES = 4096
_CARD_COLOURS = {"info": "blue", "success": "green", "warning": "orange", "failure": "red"}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature: base64 HMAC-SHA256 of ``"{timestamp}\\n{secret}"`` keyed by secret.

    >>> dingtalk_sign("SEC123", 1700000000000)
    'lkcPI1uoxBY1gUnCnnPH1Kkru0Hqjo7rFpA3haIVhEQ='
    """
    text = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), text, hashlib.sha256).digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu/Lark's signature: base64 HMAC-SHA256 of an empty message keyed by
    ``"{timestamp}\\n{secret}"``.

    >>> feishu_sign("s3cret", 1700000000)
    'IX3eHI0/v/Td7jqJ0ynSEK3Dq5JY3HUZeoeMgVZeZGo='
    """
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


@notify(on="kpiwecom", name="kpistream WeCom bot (markdown)")
def _wecom(body: str, title: str, notify_type: str, meta: dict, *args: Any, **kwargs: Any) -> bool:
    """POST a WeCom group-bot markdown message."""
    key = unquote(meta.get("host", ""))
    mentions = _split(meta, "mention")
    content = f"**{title}**\n{body}" if title else body
    if mentions:
        content += "\n" + " ".join(f"<@{uid}>" for uid in mentions)
    payload = {"msgtype": "markdown", "markdown": {"content": _clip_utf8(content)}}
    url = _base(meta, "https://qyapi.weixin.qq.com") + f"/cgi-bin/webhook/send?key={quote(key)}"
    return _post("WeCom bot", url, payload)


@notify(on="kpidingtalk", name="kpistream DingTalk bot (markdown, signed)")
def _dingtalk(
    body: str, title: str, notify_type: str, meta: dict, *args: Any, **kwargs: Any
) -> bool:
    """POST a DingTalk markdown message, signed when a secret is given, with @mentions."""
    token, secret = unquote(meta.get("host", "")), unquote(meta.get("user") or "")
    mobiles, at_all = _split(meta, "at"), _flag(meta, "atall")
    mentions = " ".join(f"@{m}" for m in mobiles) + (" @all" if at_all else "")
    heading = " ".join(title.split()) or "kpistream"
    text = f"### {heading}\n{body}" + (f"\n\n{mentions.strip()}" if mentions.strip() else "")
    payload = {
        "msgtype": "markdown",
        "markdown": {"title": heading, "text": text},
        "at": {"atMobiles": mobiles, "isAtAll": at_all},
    }
    url = _base(meta, "https://oapi.dingtalk.com") + f"/robot/send?access_token={quote(token)}"
    if secret:
        now_ms = int(time.time() * 1000)
        url += f"&timestamp={now_ms}&sign={quote(dingtalk_sign(secret, now_ms), safe='')}"
    return _post("DingTalk bot", url, payload)


@notify(on="kpifeishu", name="kpistream Feishu bot (card)")
def _feishu(body: str, title: str, notify_type: str, meta: dict, *args: Any, **kwargs: Any) -> bool:
    """POST a Feishu interactive card."""
    return _card("Feishu bot", "https://open.feishu.cn", body, title, notify_type, meta)


@notify(on="kpilark", name="kpistream Lark bot (card)")
def _lark(body: str, title: str, notify_type: str, meta: dict, *args: Any, **kwargs: Any) -> bool:
    """POST a Lark interactive card (Feishu's international service)."""
    return _card("Lark bot", "https://open.larksuite.com", body, title, notify_type, meta)


def _card(service: str, default_base: str, body: str, title: str, kind: str, meta: dict) -> bool:
    token, secret = unquote(meta.get("host", "")), unquote(meta.get("user") or "")
    payload: dict[str, Any] = {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {
                "title": {"tag": "plain_text", "content": title or "kpistream"},
                "template": _CARD_COLOURS.get(str(kind), "blue"),
            },
            "elements": [{"tag": "markdown", "content": body}],
        },
    }
    if secret:
        now_s = int(time.time())
        payload |= {"timestamp": str(now_s), "sign": feishu_sign(secret, now_s)}
    url = _base(meta, default_base) + f"/open-apis/bot/v2/hook/{quote(token)}"
    return _post(service, url, payload)


def _post(service: str, url: str, payload: Mapping[str, Any]) -> bool:
    """POST JSON; True on HTTP 200 with a zero (or absent) errcode/code. Never logs the URL."""
    try:
        response = requests.post(
            url,
            data=json.dumps(payload, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as e:
        log.warning("%s: request failed (%s)", service, type(e).__name__)
        return False
    if response.status_code != 200:
        log.warning("%s: HTTP %d", service, response.status_code)
        return False
    code = _reply_code(response)
    if code:
        log.warning("%s: rejected with code %s", service, code)
        return False
    return True


def _reply_code(response: requests.Response) -> object:
    """The bot's own error code (DingTalk/WeCom ``errcode``, Feishu ``code``), 0 when fine."""
    try:
        reply = response.json()
    except ValueError:
        return 0
    if not isinstance(reply, dict):
        return 0
    return reply.get("errcode") or reply.get("code") or reply.get("StatusCode") or 0


def _base(meta: dict, default: str) -> str:
    return (meta.get("qsd", {}).get("base") or default).rstrip("/")


def _split(meta: dict, key: str) -> list[str]:
    raw = meta.get("qsd", {}).get(key, "")
    return [part.strip() for part in raw.replace(";", ",").split(",") if part.strip()]


def _flag(meta: dict, key: str) -> bool:
    return meta.get("qsd", {}).get(key, "").lower() in {"1", "yes", "true", "on"}


def _clip_utf8(text: str, limit: int = WECOM_MARKDOWN_MAX_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")
