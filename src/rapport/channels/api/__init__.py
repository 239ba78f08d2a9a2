"""The API channel: any system posts inbound messages over REST and gets replies by webhook."""

import time

import httpx
import orjson

from rapport import outbound
from rapport.channels import base
from rapport.crypto import hmac_sha256_hex


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">``, checkable by the receiver."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={hmac_sha256_hex(secret, f'{ts}.'.encode() + body)}"


class ApiChannel:
    name = "api"
    fields: tuple[base.Setting, ...] = (
        base.Setting(
            "webhook_url",
            "Reply webhook",
            "url",
            "Each reply an agent writes is posted here as JSON. Without one, replies wait "
            "to be read through the API.",
        ),
        base.Setting(
            "webhook_secret",
            "Webhook secret",
            "secret",
            "Signs each post in X-Rapport-Signature (t=time,v1=HMAC-SHA256 of time.body).",
        ),
        base.rate_setting(100),
    )
    secret_fields = base.secret_names(fields)
    sends_files = True

    def send(self, out: base.Outbound) -> base.SendResult:
        """POST the reply to the inbox's webhook URL; without one, the reply waits to be read."""
        url = out.inbox.settings.get("webhook_url")
        if not url:
            return base.SendResult(meta={"delivery": "poll"})
        body = orjson.dumps(
            {
                "event": "message.created",
                "message": {
                    "id": out.message.id,
                    "conversation_id": out.conversation.id,
                    "text": out.message.text,
                    "html": out.message.html,
                    "created_at": out.message.created_at.isoformat(),
                    # Signed links, valid for a day, each serving its one file.
                    "attachments": [
                        {
                            "id": f.id,
                            "filename": f.filename,
                            "content_type": f.content_type,
                            "size": f.size,
                            "url": f.url,
                        }
                        for f in out.files
                    ],
                },
                "customer": {
                    "id": out.customer.id,
                    "name": out.customer.name,
                    "email": out.customer.email,
                    "phone": out.customer.phone,
                    "external_ids": [i.value for i in out.identities if i.kind.value == "external"],
                },
            }
        )
        headers = {"Content-Type": "application/json", "User-Agent": "Rapport"}
        secret = out.secrets.get("webhook_secret")
        if secret:
            headers["X-Rapport-Signature"] = signature_header(str(secret), body)
        try:
            resp = outbound.request(
                "POST",
                str(url),
                allow_private=out.allow_private,
                content=body,
                headers=headers,
                timeout=15,
            )
        except httpx.HTTPError as exc:
            raise base.DeliveryError(f"webhook unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
            raise base.DeliveryError(
                f"webhook answered {resp.status_code}",
                permanent=permanent,
                # The receiving system refuses Rapport's calls, not this one message.
                account=resp.status_code in (401, 403),
            )
        return base.SendResult(meta={"delivery": "webhook", "status_code": resp.status_code})


CHANNEL = base.register(ApiChannel())
