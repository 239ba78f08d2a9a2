"""Secrets at rest: provider tokens and TOTP seeds are Fernet-encrypted with a derived key;
what Rapport must trust when it reads it back (trained models) is signed with another."""

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SIGNED = b"rapport-signed-1:"


class SecretBox:
    """Encrypts and decrypts small secrets, and signs and checks blobs, with keys derived
    from the settings' secret key."""

    def __init__(self, secret_key: str) -> None:
        key = _derive(secret_key, b"secrets-at-rest")
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._signing = _derive(secret_key, b"signed-blobs")

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "secret cannot be decrypted with the current RAPPORT_SECRET_KEY"
            ) from exc

    def sign(self, data: bytes) -> bytes:
        """``data`` with a prefix that proves Rapport wrote it (HMAC-SHA256)."""
        return _SIGNED + hmac.digest(self._signing, data, "sha256") + data

    def verified(self, signed: bytes) -> bytes:
        """The data ``sign`` wrapped; ``ValueError`` when it was not signed with this key
        (written by someone else, altered, or signed before the secret key changed)."""
        body = signed[len(_SIGNED) + 32 :]
        mac = signed[len(_SIGNED) : len(_SIGNED) + 32]
        if not signed.startswith(_SIGNED) or not hmac.compare_digest(
            mac, hmac.digest(self._signing, body, "sha256")
        ):
            raise ValueError("not signed with the current RAPPORT_SECRET_KEY")
        return body

    def encrypt_json(self, data: dict[str, Any]) -> str:
        return self.encrypt(json.dumps(data, sort_keys=True))

    def decrypt_json(self, token: str | None) -> dict[str, Any]:
        if not token:
            return {}
        value = json.loads(self.decrypt(token))
        assert isinstance(value, dict)
        return value


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rapport", info=purpose).derive(
        secret_key.encode()
    )


def random_token(prefix: str = "", nbytes: int = 32) -> str:
    """A URL-safe random token, optionally with a readable prefix (``rpt_...``)."""
    return prefix + secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hmac_sha256_hex(key: str | bytes, message: str | bytes) -> str:
    k = key.encode() if isinstance(key, str) else key
    m = message.encode() if isinstance(message, str) else message
    return hmac.new(k, m, hashlib.sha256).hexdigest()


_boxes: dict[str, SecretBox] = {}


def same(given: str | None, expected: str | bytes) -> bool:
    """A constant-time comparison of what a caller sent with what we expect; any header
    text compares (as bytes), never raising."""
    if not given:
        return False
    want = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), want)


def box_for(secret_key: str) -> SecretBox:
    """The SecretBox for a key, built once (key derivation is deliberately not free)."""
    box = _boxes.get(secret_key)
    if box is None:
        box = _boxes[secret_key] = SecretBox(secret_key)
    return box
