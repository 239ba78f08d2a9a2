"""Password hashing, token hashing and TOTP: the primitives auth is built from."""

import secrets
import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from rapport.cache import Once
from rapport.crypto import same, sha256_hex

_hasher = PasswordHasher()
# Verifying against this when the user does not exist costs the same as a real check,
# so response times do not reveal which emails have accounts. Made once a process, when
# the app starts (``warm_up``), not at import: each CLI command paid ~0.15 s for it.
dummy_hash = Once(lambda: _hasher.hash("rapport-timing-equalizer"))

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_api_token() -> str:
    return "rpt_" + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return sha256_hex(token)


def new_totp_secret() -> str:
    return str(pyotp.random_base32())


def totp_uri(secret: str, *, email: str, issuer: str = "Rapport") -> str:
    return str(pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer))


def totp_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The 30-second step whose code this is (the current one, or the one just before or
    after, for clocks that drift); ``None`` for a wrong code."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if at is None else at
    for step in (int(now // 30) + d for d in (-1, 0, 1)):
        if same(code, totp.at(step * 30)):
            return step
    return None


def new_recovery_codes(n: int = 10) -> list[str]:
    """One-time codes shown once at enrolment; stored only as hashes."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(2))
        for _ in range(n)
    ]


def recovery_hash(code: str) -> str:
    return sha256_hex("recovery:" + code.strip().lower())
