"""Secrets in Apprise URLs: expand ``${ENV_VAR}`` references, hide tokens, name the channel.

Apprise URLs carry webhook keys, passwords and signing secrets. Everything that leaves this
package (logs, metric labels, error messages, results) goes through :func:`redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from kpistream.errors import KpistreamError

__all__ = [
    "MissingVariable",
    "channel_of",
    "expand_url",
    "redact",
    "referenced_values",
    "secret_parts",
]

HIDDEN = "***"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SENSITIVE_KEY = re.compile(
    r"secret|key|token|pass|pwd|sign|auth|cred|session|webhook|hook|sig", re.IGNORECASE
)
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-+=.~%]+$")
#: schemes whose host is a real host name, never a token
_WEB_SCHEMES = frozenset({"http", "https", "json", "jsons", "form", "forms", "xml", "xmls"})


class MissingVariable(KpistreamError):
    """An Apprise URL refers to an environment variable that is not set."""


def expand_url(url: str, environ: Mapping[str, str]) -> str:
    """Replace every ``${NAME}`` in ``url`` with ``environ[NAME]``.

    Values are inserted as they are: a value used inside a URL part must already be
    URL-encoded. A missing variable raises :class:`MissingVariable` naming the variable and
    the redacted URL, never a value.

    >>> expand_url("wecombot://${BOT}", {"BOT": "abc"})
    'wecombot://abc'
    >>> try:
    ...     expand_url("mailto://a:${PW}@mail.example.com", {})
    ... except MissingVariable as e:
    ...     print(e)
    Apprise URL "mailto://a:${PW}@mail.example.com" skipped: environment variable PW is not set
    """
    missing = [name for name in _VAR.findall(url) if name not in environ]
    if missing:
        names = ", ".join(sorted(set(missing)))
        noun = "variable" if len(set(missing)) == 1 else "variables"
        raise MissingVariable(
            f'Apprise URL "{redact(url)}" skipped: environment {noun} {names} is not set'
        )
    return _VAR.sub(lambda m: environ[m.group(1)], url)


def referenced_values(url: str, environ: Mapping[str, str]) -> list[str]:
    """The values of the variables ``url`` refers to (all secret, whatever they look like).

    >>> referenced_values("wecombot://${BOT}?x=${NOPE}", {"BOT": "abc"})
    ['abc']
    """
    return [environ[name] for name in _VAR.findall(url) if name in environ]


def channel_of(url: str) -> str:
    """The channel of an Apprise URL for the ``channel`` metric label: its scheme.

    >>> channel_of("WeComBot://key")
    'wecombot'
    >>> channel_of("${SALES_OPS_WECOM}")
    'unknown'
    """
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else "unknown"


def redact(url: str) -> str:
    """``url`` with its passwords, tokens, keys and secrets replaced by ``***``.

    >>> redact("mailto://alerts:hunter2@mail.example.com?to=ops@example.com")
    'mailto://alerts:***@mail.example.com?to=ops@example.com'
    >>> redact("wecombot://693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa")
    'wecombot://***'
    >>> redact("https://oapi.dingtalk.com/robot/send?access_token=abc123&secret=SECx")
    'https://oapi.dingtalk.com/robot/send?access_token=***&secret=***'
    >>> redact("json://127.0.0.1:8080/hooks/a1b2c3d4e5f6?x=1")
    'json://127.0.0.1:8080/hooks/***?x=1'
    >>> redact("mailto://a:${PW}@mail.example.com")
    'mailto://a:${PW}@mail.example.com'
    """
    parts = secret_parts(url)
    if parts is None:
        return f"{channel_of(url)}://{HIDDEN}"
    try:
        split = urlsplit(url)
    except ValueError:
        return f"{channel_of(url)}://{HIDDEN}"
    netloc = _redact_netloc(split.scheme.lower(), split.netloc)
    path = "/".join(HIDDEN if _is_token(seg) else seg for seg in split.path.split("/"))
    query = "&".join(_redact_pair(pair) for pair in split.query.split("&")) if split.query else ""
    return urlunsplit((split.scheme, netloc, path, query, ""))


def secret_parts(url: str) -> set[str] | None:
    """The substrings of ``url`` that :func:`redact` hides, raw and URL-decoded.

    ``None`` when the URL cannot be parsed (then all of it must be treated as secret).

    >>> sorted(secret_parts("mailto://alerts:p%40ss@mail.example.com"))
    ['p%40ss', 'p@ss']
    """
    try:
        split = urlsplit(url)
        split.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return None
    found: list[str] = []
    userinfo, _, host = split.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    found += [password] if password else []
    found += [user] if _is_token(user) else []
    found += [host.split(":")[0]] if _host_is_token(split.scheme.lower(), host) else []
    found += [seg for seg in split.path.split("/") if _is_token(seg)]
    found += [value for key, value in parse_qsl(split.query) if _sensitive(key, value)]
    return {p for raw in found if raw and "${" not in raw for p in (raw, unquote(raw))}


def _redact_netloc(scheme: str, netloc: str) -> str:
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        user = HIDDEN if _is_token(user) else user
        password = HIDDEN if password and "${" not in password else password
        userinfo = f"{user}{colon}{password}"
    if _host_is_token(scheme, host):
        _, colon, port = host.partition(":")
        host = f"{HIDDEN}{colon}{port}"
    return f"{userinfo}{at}{host}"


def _redact_pair(pair: str) -> str:
    key, eq, value = pair.partition("=")
    return f"{key}{eq}{HIDDEN}" if eq and _sensitive(unquote(key), unquote(value)) else pair


def _sensitive(key: str, value: str) -> bool:
    if not value or "${" in value:
        return False
    return bool(_SENSITIVE_KEY.search(key)) or (len(value) >= 24 and _is_token(value))


def _host_is_token(scheme: str, host: str) -> bool:
    name = host.split(":")[0]
    if scheme in _WEB_SCHEMES or not name or "${" in name:
        return False
    return "." not in name and name.lower() != "localhost" and not name.startswith("[")


def _is_token(segment: str) -> bool:
    """A path segment or user name that looks like a key: long, or letters mixed with digits."""
    if not segment or "${" in segment or not _TOKENISH.match(segment):
        return False
    if len(segment) >= 16:
        return True
    has_digit = any(c.isdigit() for c in segment)
    has_alpha = any(c.isalpha() for c in segment)
    return len(segment) >= 8 and has_digit and has_alpha
