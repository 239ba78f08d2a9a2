"""Secrets at rest: provider tokens and TOTP seeds are Fernet-encrypted with a derived key."""

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretBox:
    """Encrypts and decrypts small secrets with a key derived from the settings' secret key."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"rapport", info=b"secrets-at-rest"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "secret cannot be decrypted with the current RAPPORT_SECRET_KEY"
            ) from exc

    def encrypt_json(self, data: dict[str, Any]) -> str:
        return self.encrypt(json.dumps(data, sort_keys=True))

    def decrypt_json(self, token: str | None) -> dict[str, Any]:
        if not token:
            return {}
        value = json.loads(self.decrypt(token))
        assert isinstance(value, dict)
        return value


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


def box_for(secret_key: str) -> SecretBox:
    """The SecretBox for a key, built once (key derivation is deliberately not free)."""
    box = _boxes.get(secret_key)
    if box is None:
        box = _boxes[secret_key] = SecretBox(secret_key)
    return box
