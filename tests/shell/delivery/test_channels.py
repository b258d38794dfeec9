"""Each channel delivered through Apprise to a real receiver on loopback."""

from __future__ import annotations

import base64
from urllib.parse import quote

from delivery_support import SECRETS, make_notification

from kpistream.shell.delivery import notification_chart
from kpistream.shell.delivery.plugins import dingtalk_sign, feishu_sign

PNG = b"\x89PNG\r\n\x1a\n"


def base(receiver) -> str:
    return quote(receiver.url, safe="")


async def test_email_arrives_with_the_chart_attached(make_sender, smtp_receiver):
    url = (
        f"mailto://{smtp_receiver.user}:${{SMTP_PASSWORD}}@127.0.0.1:{smtp_receiver.port}"
        "?mode=insecure&to=sales@example.com&from=kpistream@example.com"
    )
    sender = make_sender(chart=notification_chart)

    delivery = await sender.send(make_notification((url,)))

    assert delivery.delivered, delivery
    [mail] = await smtp_receiver.wait_for(1)
    assert mail.rcpt_tos == ("sales@example.com",)
    assert mail.subject == "[FIRING] GMV 成交额"
    assert "<strong>gmv</strong>" in mail.body("html")
    [(name, content_type, data)] = mail.attachments
    assert (name, content_type) == ("chart.png", "image/png")
    assert data.startswith(PNG)


async def test_json_webhook_gets_title_text_and_no_chart_by_default(make_sender,
                                                                     http_receiver):
    host = http_receiver.url.removeprefix("http://")
    sender = make_sender(chart=notification_chart)

    delivery = await sender.send(make_notification((f"json://{host}/hook",)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.json["title"] == "[FIRING] GMV 成交额"
    assert request.json["attachments"] == []  # not held back ~0.1 s for a chart


async def test_json_webhook_gets_title_text_and_chart(make_sender, http_receiver):
    """Also stands in for Slack: Apprise's ``slack://`` posts only to hooks.slack.com and
    cannot be pointed at a local address, so its generic JSON equivalent is tested here."""
    host = http_receiver.url.removeprefix("http://")
    sender = make_sender(chart=notification_chart, chart_channels={"json"})

    delivery = await sender.send(make_notification((f"json://{host}/hooks/${{HOOK_TOKEN}}",)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert (request.method, request.path) == ("POST", f"/hooks/{SECRETS['HOOK_TOKEN']}")
    body = request.json
    assert body["title"] == "[FIRING] GMV 成交额"
    assert body["message"] == "gmv = 812.5 (value < 1000) owner sales-ops"
    assert body["type"] == "failure"
    [attachment] = body["attachments"]
    assert attachment["filename"] == "chart.png"
    assert base64.b64decode(attachment["base64"]).startswith(PNG)


async def test_form_webhook(make_sender, http_receiver):
    host = http_receiver.url.removeprefix("http://")

    delivery = await make_sender().send(make_notification((f"form://{host}/form",)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.path == "/form"
    assert b"812.5" in request.body


async def test_wecom_bot_markdown_with_mentions(make_sender, http_receiver):
    url = f"kpiwecom://${{WECOM_KEY}}?mention=zhangsan,lisi&base={base(http_receiver)}"

    delivery = await make_sender().send(make_notification((url,)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.path == "/cgi-bin/webhook/send"
    assert request.query == {"key": SECRETS["WECOM_KEY"]}
    assert request.json == {
        "msgtype": "markdown",
        "markdown": {
            "content": "**[FIRING] GMV 成交额**\n**gmv** = `812.5`\n> value < 1000\n"
            "<@zhangsan> <@lisi>"
        },
    }


async def test_dingtalk_markdown_signed_with_mentions(make_sender, http_receiver):
    url = (
        f"kpidingtalk://${{DING_SECRET}}@${{DING_TOKEN}}"
        f"?at=13800000000,13900000000&base={base(http_receiver)}"
    )

    delivery = await make_sender().send(make_notification((url,)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.path == "/robot/send"
    assert request.query["access_token"] == SECRETS["DING_TOKEN"]
    expected_sign = dingtalk_sign(SECRETS["DING_SECRET"], int(request.query["timestamp"]))
    assert request.query["sign"] == expected_sign
    assert request.json == {
        "msgtype": "markdown",
        "markdown": {
            "title": "[FIRING] GMV 成交额",
            "text": "### [FIRING] GMV 成交额\n**gmv** = `812.5`\n> value < 1000\n\n"
            "@13800000000 @13900000000",
        },
        "at": {"atMobiles": ["13800000000", "13900000000"], "isAtAll": False},
    }


async def test_feishu_card_signed(make_sender, http_receiver):
    url = f"kpifeishu://${{FEISHU_SECRET}}@${{FEISHU_TOKEN}}?base={base(http_receiver)}"

    delivery = await make_sender().send(make_notification((url,)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.path == f"/open-apis/bot/v2/hook/{SECRETS['FEISHU_TOKEN']}"
    body = request.json
    assert body["sign"] == feishu_sign(SECRETS["FEISHU_SECRET"], int(body["timestamp"]))
    assert body["msg_type"] == "interactive"
    assert body["card"]["header"] == {
        "title": {"tag": "plain_text", "content": "[FIRING] GMV 成交额"},
        "template": "red",
    }
    assert body["card"]["elements"] == [
        {"tag": "markdown", "content": "**gmv** = `812.5`\n> value < 1000"}
    ]


async def test_lark_card(make_sender, http_receiver):
    url = f"kpilark://${{FEISHU_TOKEN}}?base={base(http_receiver)}"

    delivery = await make_sender().send(make_notification((url,)))

    assert delivery.delivered, delivery
    [request] = await http_receiver.wait_for(1)
    assert request.path == f"/open-apis/bot/v2/hook/{SECRETS['FEISHU_TOKEN']}"
    assert "sign" not in request.json
    assert request.json["card"]["header"]["template"] == "red"


async def test_bot_error_code_in_a_200_reply_is_a_failure(make_sender, http_receiver, recorder):
    """DingTalk, WeCom and Feishu answer HTTP 200 with a non-zero errcode/code on errors."""
    http_receiver.reply = {"errcode": 310000, "errmsg": "sign not match"}
    url = f"kpidingtalk://${{DING_TOKEN}}?base={base(http_receiver)}"

    delivery = await make_sender().send(make_notification((url,)))

    assert not delivery.delivered
    assert len(http_receiver.requests) == 3
    assert recorder.counts == {("kpidingtalk", "retried"): 2, ("kpidingtalk", "failed"): 1}
