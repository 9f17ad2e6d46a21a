"""Caller identity: verify bearer JWTs (HMAC secret, PEM public key or JWKS) into a `Principal`.

Claims are mapped by dotted path, from a provider preset (`ROLEGATE_CLAIMS`) or explicit
`ROLEGATE_CLAIM_*` paths. Whether token roles are trusted is decided by the caller, not here.
Every failure is a `rolegate.errors` type; messages never contain the token.
"""

from __future__ import annotations

import copy
import logging
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import Settings
from .errors import AuthenticationError, ConfigError, InvalidRequest, KeyServerUnavailable

log = logging.getLogger(__name__)

MAX_AUTHORIZATION_BYTES = 8192
MAX_TOKEN_BYTES = 8192
MAX_HEADER_SEGMENT = 2732  # base64url length of a 2 KB JOSE header
# Verified tokens are remembered briefly: services send the same token for many checks.
# An entry never outlives the token's `exp` nor the JWKS lifespan (so a removed key stops
# working on time), and the cache is emptied when it reaches its size limit.
VERIFIED_CACHE_SECONDS = 60
VERIFIED_CACHE_SIZE = 10_000
MAX_IDENTIFIER = 256

HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # PyJWT's recommended minimums
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {
    "secp256r1": ("ES256",),
    "secp384r1": ("ES384",),
    "secp521r1": ("ES512",),
    "secp256k1": ("ES256K",),
}
PUBLIC_KEY_ALGORITHMS = (*RSA_ALGORITHMS, *(a for v in EC_ALGORITHMS.values() for a in v), "EdDSA")
MIN_RSA_BITS = 2048
KEY_VARIABLES = "ROLEGATE_JWT_SECRET, ROLEGATE_JWT_PUBLIC_KEY or ROLEGATE_JWKS_URL"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `roles` come from the token (trusting them is the caller's call)."""

    subject: str
    org: str | None
    roles: tuple[str, ...]
    issuer: str | None
    key_id: str | None
    kind: str = "user"


@dataclass(frozen=True)
class _Preset:
    org: str | None
    roles: str | None
    audience: tuple[str, ...] = ()


PRESETS = {
    "generic": _Preset("org", "roles"),
    "clerk": _Preset("o.id", "o.rol"),  # v2; v1 (`org_id`, `org_role`) when `o` is absent
    "supabase": _Preset("app_metadata.org_id", "app_metadata.role", ("authenticated",)),
    "auth0": _Preset("org_id", None),  # roles only via a namespaced claim: ROLEGATE_CLAIM_ROLES
    "keycloak": _Preset("organization", "realm_access.roles"),
}


@dataclass(frozen=True)
class _ClaimMap:
    preset: str
    subject: str
    org: str | None
    roles: str | None
    audience: tuple[str, ...]
    org_overridden: bool
    roles_overridden: bool


def _claim_map(settings: Settings) -> _ClaimMap:
    name = settings.claims.strip().lower() or "generic"
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(
            f"ROLEGATE_CLAIMS: unknown preset {settings.claims!r} "
            f"(expected one of {', '.join(PRESETS)})"
        )
    for variable, path in (
        ("ROLEGATE_CLAIM_SUBJECT", settings.claim_subject),
        ("ROLEGATE_CLAIM_ORG", settings.claim_org),
        ("ROLEGATE_CLAIM_ROLES", settings.claim_roles),
    ):
        if path is not None and not all(path.split(".")):
            raise ConfigError(f"{variable}: {path!r} is not a dotted claim path")
    return _ClaimMap(
        preset=name,
        subject=settings.claim_subject or "sub",
        org=settings.claim_org or preset.org,
        roles=settings.claim_roles or preset.roles,
        audience=settings.jwt_audience or preset.audience,
        org_overridden=settings.claim_org is not None,
        roles_overridden=settings.claim_roles is not None,
    )


def _invalid(message: str, code: str = "invalid_token") -> AuthenticationError:
    return AuthenticationError(message, code=code)


def _public_key_family(key: Any) -> tuple[str, ...]:
    """Algorithms a public key may verify; () for anything else (private, symmetric, weak)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS if key.key_size >= MIN_RSA_BITS else ()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS.get(key.curve.name, ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()


def _load_public_key(value: str) -> Any:
    if "-----BEGIN" in value:
        data = value.replace("\\n", "\n").encode()
    else:
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"ROLEGATE_JWT_PUBLIC_KEY: cannot read {value}: {exc.strerror}"
            ) from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return load_pem_public_key(data)
    except ValueError:
        raise ConfigError(
            "ROLEGATE_JWT_PUBLIC_KEY is not a PEM public key or certificate"
        ) from None


def _restrict(family: Sequence[str], wanted: Sequence[str], kind: str) -> tuple[str, ...]:
    if not wanted:
        return tuple(family)
    outside = [alg for alg in wanted if alg not in family]
    if outside:
        raise ConfigError(
            f"ROLEGATE_JWT_ALGORITHMS: {', '.join(outside)} cannot be used with {kind} "
            f"(allowed: {', '.join(family) or 'none'})"
        )
    return tuple(dict.fromkeys(wanted))


def _hmac_algorithms(secret: str, wanted: Sequence[str]) -> tuple[str, ...]:
    size = len(secret.encode())
    if size < HMAC_MIN_BYTES["HS256"]:
        raise ConfigError("ROLEGATE_JWT_SECRET must be at least 32 bytes long")
    algorithms = _restrict(tuple(HMAC_MIN_BYTES), wanted, "ROLEGATE_JWT_SECRET")
    if not wanted:
        return tuple(alg for alg in algorithms if HMAC_MIN_BYTES[alg] <= size)
    short = [alg for alg in algorithms if HMAC_MIN_BYTES[alg] > size]
    if short:
        raise ConfigError(
            f"ROLEGATE_JWT_SECRET is too short for {', '.join(short)} "
            f"(needs {HMAC_MIN_BYTES[short[-1]]} bytes)"
        )
    return algorithms


def _lookup(claims: Mapping[str, Any], path: str) -> Any:
    """Value at a dotted path, or None; keys containing dots (`https://x.io/roles`) match too."""
    parts = path.split(".")
    value: Any = claims
    i = 0
    while i < len(parts):
        if not isinstance(value, Mapping):
            return None
        for j in range(len(parts), i, -1):  # longest key first
            key = ".".join(parts[i:j])
            if key in value:
                value, i = value[key], j
                break
        else:
            return None
    return value


def _identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"the token's {what} must be a non-empty string")
    if len(value) > MAX_IDENTIFIER:
        raise _invalid(f"the token's {what} is longer than {MAX_IDENTIFIER} characters")
    if value != value.strip() or any(
        unicodedata.category(ch).startswith(("C", "Zl", "Zp")) for ch in value
    ):
        raise _invalid(f"the token's {what} contains control characters or surrounding spaces")
    if value == "*":
        raise _invalid(f"the token's {what} must not be '*'")
    return value


def _roles(value: Any, strip_prefix: str = "") -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _invalid("the token's roles claim must be a string or a list of strings")
    roles: dict[str, None] = {}
    for item in items:
        if strip_prefix and isinstance(item, str) and item.startswith(strip_prefix):
            item = item[len(strip_prefix) :]
        roles[_identifier(item, "role")] = None
    return tuple(roles)


class TokenVerifier:
    """Verifies bearer tokens against exactly one key source configured in `Settings`."""

    def __init__(self, settings: Settings):
        sources = [
            name
            for name, value in (
                ("ROLEGATE_JWT_SECRET", settings.jwt_secret),
                ("ROLEGATE_JWT_PUBLIC_KEY", settings.jwt_public_key),
                ("ROLEGATE_JWKS_URL", settings.jwks_url),
            )
            if value
        ]
        if not sources:
            raise ConfigError(f"no token key configured: set {KEY_VARIABLES}")
        if len(sources) > 1:
            raise ConfigError(f"set only one of {', '.join(sources)} (token key sources)")
        self._settings = settings
        self._claims = _claim_map(settings)
        # checked before iss/aud, so a key-like token without a subject reads as such
        subject_path = self._claims.subject
        self._required = ["exp"] + ([subject_path] if "." not in subject_path else [])
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._cache_seconds = VERIFIED_CACHE_SECONDS
        if settings.jwks_url:
            self._cache_seconds = min(VERIFIED_CACHE_SECONDS, settings.jwks_lifespan)
        self._key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        wanted = settings.jwt_algorithms
        if settings.jwt_secret:
            self._key = settings.jwt_secret
            self._algorithms = _hmac_algorithms(settings.jwt_secret, wanted)
        elif settings.jwt_public_key:
            self._key = _load_public_key(settings.jwt_public_key)
            family = _public_key_family(self._key)
            if not family:
                raise ConfigError(
                    "ROLEGATE_JWT_PUBLIC_KEY: unsupported key (RSA of at least 2048 bits, "
                    "EC P-256/P-384/P-521/secp256k1, Ed25519 or Ed448)"
                )
            self._algorithms = _restrict(family, wanted, "this public key")
        elif settings.jwks_url:  # the one source left (exactly one is set, checked above)
            self._algorithms = _restrict(PUBLIC_KEY_ALGORITHMS, wanted, "a JWKS")
            try:
                self._jwks = jwt.PyJWKClient(
                    settings.jwks_url,
                    cache_keys=False,
                    cache_jwk_set=True,
                    lifespan=settings.jwks_lifespan,
                    timeout=settings.jwks_timeout,
                    cooldown_duration=settings.jwks_cooldown,
                )
            except jwt.PyJWKClientError as exc:
                raise ConfigError(f"ROLEGATE_JWKS_URL / ROLEGATE_JWKS_*: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Build a verifier; ConfigError when the key configuration cannot work."""
        return cls(settings)

    def startup_warnings(self) -> list[str]:
        """Weak spots of the configuration, to log once at start-up."""
        warnings = []
        if not self._claims.audience:
            warnings.append("ROLEGATE_JWT_AUDIENCE is not set: the aud claim is not checked")
        if not self._issuer:
            warnings.append("ROLEGATE_JWT_ISSUER is not set: the iss claim is not checked")
        if self._jwks is not None:
            url = urlparse(self._jwks.uri)
            if url.scheme == "http" and url.hostname not in ("localhost", "127.0.0.1", "::1"):
                warnings.append("ROLEGATE_JWKS_URL uses plain http: keys can be forged in transit")
        if self._settings.trust_token_roles and not self._claims.roles:
            warnings.append(
                f"ROLEGATE_TRUST_TOKEN_ROLES is on but the {self._claims.preset} preset has no "
                "roles claim: set ROLEGATE_CLAIM_ROLES"
            )
        return warnings

    def authenticate(self, authorization: str | None) -> Principal:
        """Verify the value of an `Authorization: Bearer <token>` header."""
        size = len((authorization or "").encode("utf-8", "replace"))
        if size > MAX_AUTHORIZATION_BYTES:
            raise InvalidRequest(
                f"the Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes"
            )
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "missing credentials: expected an 'Authorization: Bearer <token>' header",
                code="missing_token",
            )
        return self.verify(token.strip())

    def verify(self, token: str) -> Principal:
        """Verify a compact JWT; AuthenticationError (401) or KeyServerUnavailable (503)."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and now < cached[1]:
            return cached[0]
        try:
            principal, expires = self._verify(token)
        except (AuthenticationError, KeyServerUnavailable):
            raise
        except Exception:  # fail closed on anything unexpected
            log.warning("unexpected error while verifying a token", exc_info=True)
            raise _invalid("the token could not be verified") from None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, min(expires, now + self._cache_seconds))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's `exp`."""
        if not isinstance(token, str) or token.count(".") != 2:
            raise _invalid("the token is not a compact JWT")
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        if len(token.partition(".")[0]) > MAX_HEADER_SEGMENT:
            raise _invalid("the token's header is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("the token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise _invalid("the token's algorithm is not allowed")
        key, algorithms = self._signing_key(kid, alg)
        audience = self._claims.audience
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=list(audience) or None,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required, "verify_aud": bool(audience)},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the token has expired", "token_expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("the token is not yet valid") from None
        except jwt.InvalidIssuerError:
            raise _invalid("the token's issuer is not accepted", "invalid_issuer") from None
        except jwt.InvalidAudienceError:
            raise _invalid("the token's audience is not accepted", "invalid_audience") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise _invalid("the token has no aud claim", "invalid_audience") from None
            if exc.claim == "iss":
                raise _invalid("the token has no iss claim", "invalid_issuer") from None
            if exc.claim == self._claims.subject:
                raise _invalid(f"no subject claim ({exc.claim}): not a user token") from None
            raise _invalid(f"the token is missing {exc.claim}") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid("the token's algorithm is not allowed") from None
        except jwt.InvalidSignatureError:
            raise _invalid("the token's signature does not verify") from None
        except jwt.InvalidTokenError:
            raise _invalid("the token is malformed or has invalid claims") from None
        return self._principal(claims, kid), float(claims["exp"])

    def _signing_key(self, kid: str | None, alg: str) -> tuple[Any, tuple[str, ...]]:
        if self._jwks is None:
            return self._key, self._algorithms
        try:
            if kid is None:
                jwk_set = self._jwks.get_jwk_set()
                keys = [k for k in jwk_set.keys if k.public_key_use in ("sig", None)]
                if len(keys) != 1:
                    raise _invalid(
                        "the token has no kid and the key set has several keys", "unknown_key"
                    )
                jwk = keys[0]
            else:
                jwk = self._jwks.get_signing_key(kid)
        except AuthenticationError:
            raise
        except jwt.PyJWKClientConnectionError:
            raise KeyServerUnavailable("the key set (JWKS) cannot be fetched") from None
        except jwt.PyJWKClientError as exc:
            if str(exc).startswith("Unable to find a signing key"):
                raise _invalid("the token's key id is not in the key set", "unknown_key") from None
            raise KeyServerUnavailable("the key set (JWKS) is unusable") from None
        except Exception:  # invalid JSON, no usable keys, reset connection...
            log.warning("JWKS fetch failed", exc_info=True)
            raise KeyServerUnavailable("the key set (JWKS) is unusable") from None
        algorithms = tuple(a for a in _public_key_family(jwk.key) if a in self._algorithms)
        if alg not in algorithms:
            raise _invalid("the token's algorithm does not match its key")
        return jwk.key, algorithms

    def _principal(self, claims: dict[str, Any], kid: str | None) -> Principal:
        paths = self._claims
        org_path, roles_path, prefix = paths.org, paths.roles, ""
        if paths.preset == "clerk" and "o" not in claims:  # Clerk session token v1
            org_path = paths.org if paths.org_overridden else "org_id"
            if not paths.roles_overridden:
                roles_path, prefix = "org_role", "org:"
        subject = _identifier(_lookup(claims, paths.subject), "subject")
        org = _lookup(claims, org_path) if org_path else None
        if paths.preset == "keycloak" and isinstance(org, list | dict):
            org = next(iter(org)) if len(org) == 1 else None  # several organisations: no org
        issuer = claims.get("iss")
        return Principal(
            subject=subject,
            org=None if org is None else _identifier(org, "organisation"),
            roles=_roles(_lookup(claims, roles_path), prefix) if roles_path else (),
            issuer=issuer if isinstance(issuer, str) else None,
            key_id=kid,
        )


def _set_path(claims: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        claims = claims.setdefault(part, {})
    claims[last] = value


def _merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def mint_token(
    settings: Settings,
    *,
    subject: str,
    org: str | None,
    roles: Sequence[str] = (),
    ttl_seconds: int = 3600,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign a token with `jwt_secret` laid out for the configured claim paths (a negative ttl
    gives an expired token); `extra_claims` are merged in last. ConfigError without a secret."""
    if not settings.jwt_secret:
        raise ConfigError("ROLEGATE_JWT_SECRET is not set: cannot mint tokens")
    algorithm = _hmac_algorithms(settings.jwt_secret, settings.jwt_algorithms)[0]
    paths = _claim_map(settings)
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + ttl_seconds}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if paths.audience:
        claims["aud"] = paths.audience[0]
    _set_path(claims, paths.subject, subject)
    if org is not None:
        if not paths.org:
            raise ConfigError("no organisation claim configured: set ROLEGATE_CLAIM_ORG")
        _set_path(claims, paths.org, org)
    if roles:
        if not paths.roles:
            raise ConfigError("no roles claim configured: set ROLEGATE_CLAIM_ROLES")
        _set_path(claims, paths.roles, list(roles))
    if extra_claims:
        _merge(claims, extra_claims)
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in `90s`, `15m`, `1h`, `2d` or a plain integer; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 15m, 1h, 2d or seconds")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
